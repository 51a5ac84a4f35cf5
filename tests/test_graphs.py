"""Tests of mcts_po.graphs: GraphML / node-link / tree JSON round-trips, the text view,
run statistics with hand-computed numbers, the HTML page's embedding, and the
`mcts-po show` / `mcts-po export` commands.

    PYTHONPATH=. .venv/bin/pytest tests/test_graphs.py -q

The hand-built tree (`build_hand_tree`, also used by tests/test_viewer_browser.py):

    0 root                                   Q +0.2  N 7
    ├── 1 step "First, 2 + 3 = 5. ..."         Q +0.5  N 4  se 0.8  12 tok
    │   ├── 3 step "The answer is 5."  ✓ term  Q +1.0  N 2  se 0.9  rollout +1  6 tok
    │   └── 4 step "The answer is 6."  ✗ term  Q -1.0  N 1  se 0.6  6 tok
    ├── 2 step "Multiply: 2 * 3 = 6."          Q -0.5  N 2  se 0.3  10 tok
    │   └── 5 step "The answer is 6."  ✗ term  Q -1.0  N 1  se 0.2  6 tok
    └── 6 plan "Plan: add the numbers."        Q  0.0  N 0  (no self_eval)
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

import networkx as nx
import pytest

from mcts_po.cli import main as cli_main
from mcts_po.graphs.html_viewer import render_viewer_html, script_safe_json
from mcts_po.graphs.networkx_export import (
    from_node_link_json,
    from_tree_json,
    read_graphml_graph,
    read_graphml_tree,
    to_networkx,
    to_node_link_json,
    to_tree_json,
    write_graphml,
)
from mcts_po.graphs.run_stats import (
    calibration_points,
    calibration_table,
    ranking_auc,
    compute_run_stats,
    subtree_outcomes,
)
from mcts_po.graphs.text_view import render_tree_text
from mcts_po.graphs.tree_files import select_trees
from mcts_po.graphs.view_pairs import SiblingPair, resolve_pair_source, sibling_pairs, view_pairs
from mcts_po.io_utils import InputError, UserError
from mcts_po.search.tree import Tree
from mcts_po.tree_io import read_trees

STEP_ONE_TEXT = "First, 2 + 3 = 5.\n\nSo far so good </script><!-- ünïcødé ✓ 中文 \u2028 -->"


def build_hand_tree() -> Tree:
    tree = Tree.new(problem_id="p-hand", question="What is 2 + 3? </script>", gold_answer="5", task="demo",
                    model="fake", backend="fake", seed=7, sampling={"temperature": 0.7, "stop": ["\n\n"]},
                    search_config={"c_puct": 1.25, "note": None}, token_counts={"generated": 40, "self_eval": 9},
                    extra={"reference_hint": False})
    tree.root.visits, tree.root.q, tree.root.value_sum = 7, 0.2, 1.4
    tree.add_child(0, text=STEP_ONE_TEXT, q=0.5, visits=4, value_sum=2.0, prior=0.7, self_eval=0.8,
                   num_tokens=12, logprob_sum=-3.5, wave=0, initial_value=0.1 + 0.2)
    tree.add_child(0, text="Multiply: 2 * 3 = 6.", q=-0.5, visits=2, value_sum=-1.0, prior=0.3, self_eval=0.3,
                   num_tokens=10, logprob_sum=-4.25, wave=0)
    tree.add_child(1, text="The answer is 5.", q=1.0, visits=2, value_sum=2.0, self_eval=0.9, rollout_value=1.0,
                   rollout_text="The answer is 5.", num_tokens=6, terminal=True, terminal_reason="answer",
                   answer="5", correct=True, wave=1)
    tree.add_child(1, text="The answer is 6.", q=-1.0, visits=1, value_sum=-1.0, self_eval=0.6, num_tokens=6,
                   terminal=True, terminal_reason="answer", answer="6", correct=False, wave=1)
    tree.add_child(2, text="The answer is 6.", q=-1.0, visits=1, value_sum=-1.0, self_eval=0.2, num_tokens=6,
                   terminal=True, terminal_reason="answer", answer="6", correct=False, wave=1)
    tree.add_child(0, kind="plan", text="Plan: add the numbers.", q=0.0, visits=0, prior=0.0, wave=2)
    return tree


def build_unsolved_tree() -> Tree:
    tree = Tree.new(problem_id="p-unsolved", question="What is 1 + 1?", gold_answer="2")
    tree.root.visits = 1
    tree.add_child(0, text="The answer is 3.", q=-1.0, visits=1, self_eval=0.7, num_tokens=8, terminal=True,
                   terminal_reason="answer", answer="3", correct=False)
    return tree


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run-a"
    run.mkdir()
    lines = [build_hand_tree().to_json(), build_unsolved_tree().to_json()]
    (run / "trees.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (run / "summary.json").write_text("{}", encoding="utf-8")
    return run


# ------------------------------------------------------------------------------ networkx
def test_to_networkx_has_every_node_field_and_the_tree_metadata():
    tree = build_hand_tree()
    graph = to_networkx(tree)
    assert graph.number_of_nodes() == 7 and graph.number_of_edges() == 6
    assert list(graph.successors(0)) == [1, 2, 6]
    assert graph.edges[0, 6]["child_index"] == 2
    node = graph.nodes[1]
    assert node["text"] == STEP_ONE_TEXT and node["q"] == 0.5 and node["visits"] == 4
    assert node["self_eval"] == 0.8 and node["logprob_sum"] == -3.5 and node["parent"] == 0
    assert node["initial_value"] == 0.1 + 0.2
    assert graph.nodes[6]["kind"] == "plan" and graph.nodes[6]["self_eval"] is None
    assert "children" not in node and "node_id" not in node
    assert graph.graph["question"] == "What is 2 + 3? </script>"
    assert graph.graph["sampling"] == {"temperature": 0.7, "stop": ["\n\n"]}


# ------------------------------------------------------------------------------ GraphML
def test_graphml_round_trip_is_exact(tmp_path):
    tree = build_hand_tree()
    path = write_graphml(tree, tmp_path / "t.graphml")
    back = read_graphml_tree(path)
    assert back.to_dict() == tree.to_dict()
    assert back.nodes[1].initial_value == 0.30000000000000004  # bit-exact float
    assert back.nodes[6].self_eval is None and back.nodes[6].answer is None and back.nodes[6].correct is None


def test_graphml_file_holds_only_graphml_types_and_omits_none(tmp_path):
    path = write_graphml(build_hand_tree(), tmp_path / "t.graphml")
    raw = nx.read_graphml(path, node_type=int)  # plain networkx, no mcts_po decoding
    assert raw.number_of_nodes() == 7 and raw.number_of_edges() == 6
    assert isinstance(raw.nodes[1]["q"], float) and isinstance(raw.nodes[1]["visits"], int)
    assert raw.nodes[3]["terminal"] is True and raw.nodes[3]["correct"] is True
    assert "self_eval" not in raw.nodes[6] and "answer" not in raw.nodes[6]  # None = missing <data>
    assert raw.nodes[1]["text"] == STEP_ONE_TEXT  # </script> and unicode survive XML escaping
    assert json.loads(raw.graph["sampling"]) == {"temperature": 0.7, "stop": ["\n\n"]}
    assert json.loads(raw.graph["search_config"]) == {"c_puct": 1.25, "note": None}
    for _, attrs in raw.nodes(data=True):
        assert all(isinstance(v, (str, int, float, bool)) for v in attrs.values())


def test_graphml_escapes_text_that_xml_cannot_carry(tmp_path):
    tree = build_hand_tree()
    tree.nodes[2].text = "tab\tcarriage\r\nnul\x00 bell\x07 end"
    path = write_graphml(tree, tmp_path / "t.graphml")
    ElementTree.parse(path)  # well-formed XML
    raw = nx.read_graphml(path, node_type=int)
    assert raw.nodes[2]["json_encoded_fields"] == "text"
    assert "json_encoded_fields" not in raw.nodes[1]
    assert read_graphml_tree(path).nodes[2].text == "tab\tcarriage\r\nnul\x00 bell\x07 end"


def test_read_graphml_reports_file_and_line_of_bad_xml(tmp_path):
    path = tmp_path / "bad.graphml"
    path.write_text("<?xml version='1.0'?>\n<graphml>\n<graph>\n</graphml>\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_graphml_graph(path)
    assert info.value.path == str(path) and info.value.line == 4


# ------------------------------------------------------------------------------ JSON
def test_node_link_json_round_trip_through_text():
    tree = build_hand_tree()
    data = to_node_link_json(tree)
    assert len(data["nodes"]) == 7 and len(data["edges"]) == 6 and data["directed"] is True
    node6 = next(n for n in data["nodes"] if n["id"] == 6)
    assert node6["self_eval"] is None and node6["kind"] == "plan"
    back = from_node_link_json(json.loads(json.dumps(data)))
    assert back.to_dict() == tree.to_dict()


def test_tree_json_is_nested_and_round_trips_keeping_child_order():
    tree = build_hand_tree()
    tree.nodes[0].children = [6, 2, 1]  # not in id order: the order must survive
    data = json.loads(json.dumps(to_tree_json(tree)))
    assert data["format"] == "mcts_po.tree-json/1"
    assert [c["id"] for c in data["root"]["children"]] == [6, 2, 1]
    assert [c["id"] for c in data["root"]["children"][2]["children"]] == [3, 4]
    assert data["root"]["children"][2]["text"] == STEP_ONE_TEXT
    assert data["graph"]["gold_answer"] == "5"
    assert from_tree_json(data).to_dict() == tree.to_dict()


def test_tree_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not an mcts_po tree JSON"):
        from_tree_json({"root": {"id": 0}})


# ------------------------------------------------------------------------------ loading
def test_read_trees_names_the_bad_line(tmp_path):
    path = tmp_path / "trees.jsonl"
    path.write_text(build_hand_tree().to_json() + "\n" + '{"tree_id": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_trees(tmp_path, require_trees=True)
    assert info.value.line == 2 and "not a valid tree" in info.value.message
    with pytest.raises(InputError, match="no such run directory or trees file"):
        read_trees(tmp_path / "missing", require_trees=True)


def test_read_trees_rejects_a_directory_without_trees(tmp_path):
    with pytest.raises(InputError, match="not a run directory: it has no trees.jsonl"):
        read_trees(tmp_path, require_trees=True)


def test_select_trees_by_problem(run_dir):
    trees = read_trees(run_dir, require_trees=True)
    assert [t.problem_id for t in select_trees(trees, "p-unsolved")] == ["p-unsolved"]
    with pytest.raises(InputError, match="no tree for problem 'nope'; problems here: p-hand, p-unsolved"):
        select_trees(trees, "nope", run_dir)


# ------------------------------------------------------------------------------ pairs
def test_sibling_pairs_of_the_hand_tree():
    assert sibling_pairs(build_hand_tree()) == [SiblingPair(0, 1, 2, 0.5, -0.5), SiblingPair(1, 3, 4, 1.0, -1.0)]


def test_extract_pair_source_matches_mcts_po_extract():
    step_dpo = pytest.importorskip("mcts_po.extract.step_dpo_pairs")
    from mcts_po.extract.config import ExtractConfig

    tree = build_hand_tree()
    expected = [(p.node_id, c.node_id, r.node_id) for p, c, r in step_dpo.pairs_in_tree(tree, ExtractConfig())]
    pairs, source = view_pairs(tree, "extract")
    assert source == "extract" and [(p.parent, p.chosen, p.rejected) for p in pairs] == expected
    assert (0, 1, 2) in expected  # the root's step children; the plan child (0 visits) is not compared
    assert resolve_pair_source("auto") == "extract"
    page = render_viewer_html([tree])
    data = _embedded_data(page)
    assert data["pair_source"] == "extract" and data["trees"][0]["pairs"] == [list(p) for p in expected]


def test_unknown_pair_source_is_a_user_error():
    with pytest.raises(UserError, match="unknown pair source 'best'; valid: auto, extract, siblings"):
        view_pairs(build_hand_tree(), "best")


def test_sibling_pairs_skip_equal_q():
    tree = Tree.new(problem_id="t", question="q")
    tree.add_child(0, text="a", q=0.25, visits=3)
    tree.add_child(0, text="b", q=0.25, visits=1)
    assert sibling_pairs(tree) == []


# ------------------------------------------------------------------------------ text view
def test_text_view_lines():
    text = render_tree_text(build_hand_tree(), width=120, pair_source="siblings")
    lines = text.splitlines()
    assert lines[3].startswith("marks: * best path, ▲/▼ chosen/rejected (2 pairs from siblings)")
    assert lines[0] == "problem p-hand  tree p-hand  kind step  nodes 7"
    assert "best path answer: 5 ✓" in lines[2] and "solved (a correct terminal): yes" in lines[2]
    node3 = next(line for line in lines if "[3]" in line)
    assert node3.startswith("│   ├── ■ [3]*▲ The answer is 5.")
    assert node3.endswith("Q=+1.00 N=2 p=1.00 se=0.90 r=+1 ✓ ans=5 [answer]")
    node2 = next(line for line in lines if "[2]" in line)
    assert node2.startswith("├── ● [2]▼ Multiply: 2 * 3 = 6.") and node2.endswith("Q=-0.50 N=2 p=0.30 se=0.30")
    plan = next(line for line in lines if "[6]" in line)
    assert plan.startswith("└── ◆ [6] Plan: add the numbers.")
    node1 = next(line for line in lines if "[1]" in line)
    assert "First, 2 + 3 = 5. So far so good </script>" in node1  # one line, whitespace collapsed
    assert all(len(line) <= 120 for line in lines[4:])


def test_text_view_depth_limit_and_width():
    lines = render_tree_text(build_hand_tree(), max_depth=1, width=70, pair_source="siblings").splitlines()
    assert "│   └── … 2 more nodes below" in lines
    assert "│   └── … 1 more node below" in lines
    assert not any("[3]" in line for line in lines)
    node1 = next(line for line in lines if "[1]" in line)
    assert len(node1) == 70 and "…" in node1


# ------------------------------------------------------------------------------ statistics
def test_subtree_outcomes():
    assert subtree_outcomes(build_hand_tree()) == {0: True, 1: True, 2: False, 3: True, 4: False, 5: False, 6: None}


def test_run_stats_exact_numbers():
    stats = compute_run_stats([build_hand_tree(), build_unsolved_tree()], calibration_bins=5, pair_source="siblings")
    assert stats.num_trees == 2 and stats.num_nodes == 9
    assert stats.node_depth_histogram == {0: 2, 1: 4, 2: 3}
    assert stats.tree_depth_histogram == {1: 1, 2: 1}
    assert stats.branching_histogram == {1: 2, 2: 1, 3: 1}
    assert stats.solved_share == 0.5 and stats.best_path_correct_share == 0.5
    assert stats.terminal_verdicts == {"correct": 1, "wrong": 3, "unverified": 0}
    assert stats.terminal_reasons == {"answer": 4}
    assert stats.num_pairs == 2 and stats.pair_source == "siblings"
    assert stats.tokens_per_problem == {"p-hand": 40, "p-unsolved": 8}
    assert stats.tokens_per_problem_summary.mean == 24.0
    assert stats.token_counts_mean == {"generated": 40.0, "self_eval": 9.0}
    cal = stats.calibration
    assert cal.num_points == 6
    assert [b.count for b in cal.bins] == [0, 2, 0, 2, 2]
    assert [b.accuracy for b in cal.bins] == [None, 0.0, None, 0.0, 1.0]
    assert [None if b.mean_score is None else round(b.mean_score, 12) for b in cal.bins] == [None, 0.25, None, 0.65, 0.85]
    assert cal.ece == pytest.approx((0.25 + 0.65 + 0.15) / 3)
    assert cal.brier == pytest.approx((0.04 + 0.09 + 0.36 + 0.49 + 0.04 + 0.01) / 6)
    assert cal.auc == 1.0  # both good nodes (0.8, 0.9) outscore all four bad ones


def test_calibration_with_rollout_outcomes():
    points = calibration_points([build_hand_tree(), build_unsolved_tree()], outcome="rollout")
    assert sorted(points) == [(0.2, False), (0.6, False), (0.7, False), (0.9, True)]
    with pytest.raises(ValueError, match="unknown calibration outcome 'x'"):
        calibration_points([], outcome="x")


def test_ranking_auc_counts_ties_half():
    # good 0.5 vs bad 0.5: a tie (0.5); good 0.5 vs bad 0.9, good 0.2 vs either bad: losses
    assert ranking_auc([(0.5, True), (0.5, False), (0.2, True), (0.9, False)]) == pytest.approx(0.5 / 4)
    assert ranking_auc([(0.1, False), (0.3, True), (0.3, True), (0.7, False)]) == pytest.approx(2 / 4)
    assert ranking_auc([(0.4, True), (0.6, True)]) is None
    assert ranking_auc([]) is None


def test_calibration_bins_put_one_in_the_last_bin():
    table = calibration_table([(1.0, True), (0.0, False), (0.5, True)], bins=2)
    assert [b.count for b in table.bins] == [1, 2]
    assert table.bins[1].accuracy == 1.0 and table.ece == pytest.approx((1 / 3) * 0 + (2 / 3) * 0.25)


# ------------------------------------------------------------------------------ HTML page
def _embedded_data(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="mcts-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_html_page_embeds_the_trees_safely():
    trees = [build_hand_tree(), build_unsolved_tree()]
    page = render_viewer_html(trees, title="run <a> & b", pair_source="siblings")
    # the only </script> tags are the template's own two
    assert page.count("</script>") == 2 and page.count("<script") == 2
    assert "<title>run &lt;a&gt; &amp; b</title>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from a network
    data = _embedded_data(page)
    assert [t["problem_id"] for t in data["trees"]] == ["p-hand", "p-unsolved"]
    first = data["trees"][0]
    text_column = data["node_fields"].index("text")
    assert first["nodes"][1][text_column] == STEP_ONE_TEXT
    assert first["best_path"] == [1, 3] and first["pairs"] == [[0, 1, 2], [1, 3, 4]]
    assert first["outcome"] == [1, 1, 0, 1, 0, 0, None] and first["solved"] is True


def test_script_safe_json_escapes_and_turns_nan_into_an_error():
    assert script_safe_json({"t": "</script>&\u2028"}) == '{"t":"\\u003c/script\\u003e\\u0026\\u2028"}'
    with pytest.raises(ValueError):
        script_safe_json({"q": float("nan")})


# ------------------------------------------------------------------------------ commands
def test_show_prints_the_tree_and_stats(run_dir, capsys):
    assert cli_main(["show", str(run_dir), "--problem", "p-hand", "--width", "120", "--pairs", "siblings"]) == 0
    out = capsys.readouterr().out
    assert "problem p-hand  tree p-hand  kind step  nodes 7" in out
    assert "solved share (a correct terminal in the tree): 1.000" in out
    assert "  [0.80, 0.90)       1           0.800     1.000" in out
    assert "preference pairs (siblings): 2" in out
    assert "├── ■ [3]*▲ The answer is 5." in out


def test_show_json_and_plot(run_dir, tmp_path, capsys):
    plot = tmp_path / "cal.png"
    assert cli_main(["show", str(run_dir), "--json", "--bins", "5", "--plot", str(plot)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["solved_share"] == 0.5 and stats["node_depth_histogram"] == {"0": 2, "1": 4, "2": 3}
    assert stats["calibration"]["num_points"] == 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_show_lists_problems_of_a_run(run_dir, capsys):
    assert cli_main(["show", str(run_dir / "trees.jsonl"), "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "p-hand                        7     2      ✓  5 ✓" in out
    assert "p-unsolved                    2     1      ✗  3 ✗" in out


def test_show_unknown_problem_is_a_clean_error(run_dir, capsys):
    assert cli_main(["show", str(run_dir), "--problem", "nope"]) == 2
    assert "no tree for problem 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("fmt,suffix", [("graphml", ".graphml"), ("json", ".json"), ("tree-json", ".tree.json")])
def test_export_per_tree_files_round_trip(run_dir, tmp_path, fmt, suffix):
    out = tmp_path / "out"
    assert cli_main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"p-hand{suffix}", f"p-unsolved{suffix}"]
    path = out / f"p-hand{suffix}"
    if fmt == "graphml":
        back = read_graphml_tree(path)
    elif fmt == "json":
        back = from_node_link_json(json.loads(path.read_text(encoding="utf-8")))
    else:
        back = from_tree_json(json.loads(path.read_text(encoding="utf-8")))
    assert back.to_dict() == build_hand_tree().to_dict()


def test_export_html_per_run_and_per_tree(run_dir, tmp_path):
    out = tmp_path / "html"
    assert cli_main(["export", str(run_dir), "--format", "html", "--out", str(out)]) == 0
    page = (out / "run-a.html").read_text(encoding="utf-8")
    assert [t["problem_id"] for t in _embedded_data(page)["trees"]] == ["p-hand", "p-unsolved"]
    assert cli_main(["export", str(run_dir), "--format", "html", "--per-tree", "--out", str(out),
                     "--problem", "p-unsolved"]) == 0
    one = _embedded_data((out / "p-unsolved.html").read_text(encoding="utf-8"))
    assert [t["problem_id"] for t in one["trees"]] == ["p-unsolved"]
