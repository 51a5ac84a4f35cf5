"""Exact tests of the value-model data formats `value` and `ppm` (mcts_po/extract/value_targets.py,
ppm_pairs.py) on a hand-built tree, plus their CLI, saving and bad input. No model, no torch.

    PYTHONPATH=. .venv/bin/pytest tests/test_value_data.py -q
"""

from __future__ import annotations

import json

import pytest

from mcts_po.cli import main
from mcts_po.extract import FORMATS, POLICY_FORMATS, ExtractConfig, extract_rows
from mcts_po.extract.value_targets import subtree_outcomes
from mcts_po.io_utils import UserError
from mcts_po.search.tree import Tree

CHAT_PROMPT = "<|im_start|>user\nWhat is 2 + 3 * 4?<|im_end|>\n<|im_start|>assistant\n"


def add(tree: Tree, parent: int, text: str, q: float, visits: int, correct: bool | None = None, terminal=False):
    return tree.add_child(parent, text=text, q=q, visits=visits, value_sum=q * visits, terminal=terminal,
                          terminal_reason="answer" if terminal else "", correct=correct,
                          answer=None if correct is None else ("14" if correct else "x"))


def value_tree() -> Tree:
    """0 root q=.1 v10
    |-1 "3 * 4 = 12."        q=.6  v5   outcome 2/3 (4, 9 correct; 5 wrong)
    |  |-4 "... = 14 ..."    q=1   v2   correct terminal
    |  |-5 "... = 15 ..."    q=-1  v1   wrong terminal
    |  `-6 "Then add 2."     q=.4  v2   outcome 1
    |     `-9 "The answer is 14."  q=1 v1 correct terminal
    |-2 "2 + 3 = 5."         q=-.8 v3   outcome 0
    |  |-7 "5 * 4 = 20 ..."  q=-1  v2   wrong terminal
    |  `-8 "Hmm."            q=-.2 v1   no verified terminal below
    `-3 "Let me think."      q=.3  v1   unexpanded: no verified terminal below
    """
    t = Tree.new(problem_id="p1", tree_id="t1", question="What is 2 + 3 * 4?", gold_answer="14", task="demo",
                 prompt=CHAT_PROMPT)
    t.root.q, t.root.visits, t.root.value_sum = 0.1, 10, 1.0
    add(t, 0, "3 * 4 = 12.", 0.6, 5)
    add(t, 0, "2 + 3 = 5.", -0.8, 3)
    add(t, 0, "Let me think.", 0.3, 1)
    add(t, 1, "2 + 12 = 14. The answer is 14.", 1.0, 2, True, terminal=True)
    add(t, 1, "2 + 12 = 15. The answer is 15.", -1.0, 1, False, terminal=True)
    add(t, 1, "Then add 2.", 0.4, 2)
    add(t, 2, "5 * 4 = 20. The answer is 20.", -1.0, 2, False, terminal=True)
    add(t, 2, "Hmm.", -0.2, 1)
    add(t, 6, "The answer is 14.", 1.0, 1, True, terminal=True)
    return t


def test_subtree_outcomes_count_verified_terminals_at_or_below():
    assert subtree_outcomes(value_tree()) == [(4, 2), (3, 2), (1, 0), (0, 0), (1, 1), (1, 0), (1, 1), (1, 0),
                                              (0, 0), (1, 1)]


def test_value_rows_are_the_maximal_paths_with_exact_targets():
    rows = extract_rows([value_tree()], "value")
    assert [r["node_ids"] for r in rows] == [[3], [1, 4], [1, 5], [2, 7], [2, 8], [1, 6, 9]]
    assert rows[5] == {
        "prompt": CHAT_PROMPT,
        "completions": ["3 * 4 = 12.", "Then add 2.", "The answer is 14."],
        "labels": [0.6, 0.4, 1.0],
        "visits": [5, 2, 1],
        "outcome": [2 / 3, 1.0, 1.0],
        "verified_below": [3, 1, 1],
        "node_ids": [1, 6, 9],
        "question": "What is 2 + 3 * 4?",
        "answer": "14",
        "dataset": "demo",
        "tree_id": "t1",
        "problem_id": "p1",
        "num_steps": 3,
        "ends_solution": True,
        "correct": True,
    }
    assert list(rows[0]) == list(FORMATS["value"].columns)
    # no verified terminal below: outcome None (not 0, not NaN), the node's Q is still the label
    assert (rows[0]["labels"], rows[0]["outcome"], rows[0]["verified_below"]) == ([0.3], [None], [0])
    assert (rows[0]["ends_solution"], rows[0]["correct"]) == (False, None)
    assert rows[4]["outcome"] == [0.0, None] and rows[4]["labels"] == [-0.8, -0.2]
    assert rows[2]["correct"] is False and rows[2]["labels"] == [0.6, -1.0]


def test_value_min_visits_cuts_paths_above_rarely_visited_nodes():
    counters: dict[str, int] = {}
    rows = extract_rows([value_tree()], "value", ExtractConfig(min_visits=2), counters)
    assert [r["node_ids"] for r in rows] == [[1, 4], [1, 6], [2, 7]]
    assert rows[1]["labels"] == [0.6, 0.4] and rows[1]["outcome"] == [2 / 3, 1.0]
    assert counters == {"steps_below_min_visits": 4}
    assert extract_rows([value_tree()], "value", ExtractConfig(min_visits=6)) == []


def test_value_skips_plan_trees():
    tree = value_tree()
    tree.tree_kind = "plan"
    counters: dict[str, int] = {}
    assert extract_rows([tree], "value", ExtractConfig(), counters) == []
    assert counters == {"plan_trees_skipped": 1}


def ppm_keys(rows):
    return [(r["parent_id"], r["chosen_id"], r["rejected_id"], round(r["margin"], 12)) for r in rows]


def test_ppm_pairs_correct_leading_high_q_against_wrong_leading_low_q():
    counters: dict[str, int] = {}
    rows = extract_rows([value_tree()], "ppm", ExtractConfig(), counters)
    # root: 1 leads to a correct answer, 2 only to wrong ones, 3 to none (in no pair);
    # node 1: 4 and 6 lead to correct answers, 5 to a wrong one; node 2: no correct-leading child
    assert ppm_keys(rows) == [(0, 1, 2, 1.4), (1, 4, 5, 2.0), (1, 6, 5, 1.4)]
    assert counters == {"groups_without_correct_and_wrong": 1}
    row = rows[0]
    assert list(row)[:4] == ["prompt", "chosen", "rejected", "margin"] and list(row) == list(FORMATS["ppm"].columns)
    assert (row["prompt"], row["chosen"], row["rejected"]) == (CHAT_PROMPT, "3 * 4 = 12.", "2 + 3 = 5.")
    assert (row["q_chosen"], row["q_rejected"], row["outcome_chosen"], row["outcome_rejected"]) == (0.6, -0.8, 2 / 3, 0.0)
    assert rows[1]["prompt"] == CHAT_PROMPT + "3 * 4 = 12.\n" and rows[1]["chosen_ends_solution"] is True


def test_ppm_margin_threshold_and_pairs_per_side():
    counters: dict[str, int] = {}
    strict = extract_rows([value_tree()], "ppm", ExtractConfig(ppm_min_q_margin=1.5), counters)
    assert ppm_keys(strict) == [(1, 4, 5, 2.0)]
    assert counters["pairs_below_ppm_min_q_margin"] == 2
    assert ppm_keys(extract_rows([value_tree()], "ppm", ExtractConfig(ppm_min_q_margin=1.4))) == \
        [(0, 1, 2, 1.4), (1, 4, 5, 2.0), (1, 6, 5, 1.4)]  # inclusive
    assert ppm_keys(extract_rows([value_tree()], "ppm", ExtractConfig(ppm_pairs_per_side=1))) == \
        [(0, 1, 2, 1.4), (1, 4, 5, 2.0)]
    # min_visits applies to both steps of a pair: 5 (1 visit) drops out, node 1 has no wrong-leading child left
    assert ppm_keys(extract_rows([value_tree()], "ppm", ExtractConfig(min_visits=2))) == [(0, 1, 2, 1.4)]
    with pytest.raises(ValueError, match="ppm_min_q_margin must be in"):
        ExtractConfig(ppm_min_q_margin=3.0)
    with pytest.raises(ValueError, match="ppm_pairs_per_side must be >= 1"):
        ExtractConfig(ppm_pairs_per_side=0)


def test_ppm_rows_are_what_trl_reward_trainer_reads():
    """RewardTrainer's own preprocessing (prompt + chosen / rejected, margin kept) accepts the rows as they are."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl.trainer.reward_trainer import DataCollatorForPreference

    rows = extract_rows([value_tree()], "ppm")
    dataset = Dataset.from_list(rows)
    assert {"prompt", "chosen", "rejected", "margin"} <= set(dataset.column_names)
    batch = DataCollatorForPreference(pad_token_id=0)(
        [{"chosen_ids": [1, 2], "rejected_ids": [3], "margin": r["margin"]} for r in rows])
    assert [round(m, 6) for m in batch["margin"].tolist()] == [1.4, 2.0, 1.4]


def test_tree_without_visits_is_refused():
    tree = value_tree()
    for node in tree.nodes:
        node.visits = 0
    for name in ("value", "ppm"):
        with pytest.raises(UserError, match=r"tree 't1' \(problem 'p1'\): none of its 9 steps has a visit"):
            extract_rows([tree], name)
    only_root = Tree.new(problem_id="p9", question="?")
    assert extract_rows([only_root], "value") == []  # nothing to learn, but nothing wrong either


def write_trees(path, trees):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.to_json() + "\n" for t in trees), encoding="utf-8")
    return path


def test_cli_writes_value_and_ppm_and_all_means_the_policy_formats(tmp_path, capsys):
    import datasets

    trees = write_trees(tmp_path / "run" / "trees.jsonl", [value_tree()])
    out = tmp_path / "data"
    assert main(["extract", "--trees", str(tmp_path / "run"), "--format", "value", "--format", "ppm",
                 "--out", str(out), "--no-progress"]) == 0
    assert "value: 6 rows" in capsys.readouterr().out
    value_rows = [json.loads(line) for line in (out / "value.jsonl").read_text().splitlines()]
    assert value_rows == extract_rows([value_tree()], "value")
    reloaded = datasets.load_from_disk(str(out / "value")).to_list()
    assert reloaded == value_rows and reloaded[0]["outcome"] == [None]
    assert len(datasets.load_from_disk(str(out / "ppm"))) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["formats"]["ppm"]["rows"] == 3 and stats["formats"]["ppm"]["mean_q_margin"] == round(4.8 / 3, 4)
    assert POLICY_FORMATS == ("step-dpo", "step-dpo-repo", "step-apo", "tpo", "dpo", "sft")
    assert main(["extract", "--trees", str(trees), "--format", "all", "--out", str(tmp_path / "all"),
                 "--no-progress"]) == 0
    assert not (tmp_path / "all" / "value.jsonl").exists() and (tmp_path / "all" / "sft.jsonl").exists()


def test_cli_empty_value_data_is_an_error(tmp_path, capsys):
    tree = value_tree()
    for node in tree.nodes:
        if node.correct:
            node.correct = False  # no correct answer anywhere: no ppm pair
    trees = write_trees(tmp_path / "t.jsonl", [tree])
    assert main(["extract", "--trees", str(trees), "--format", "ppm", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no ppm rows from 1 trees (groups_without_correct_and_wrong: 3)" in err
    assert not (tmp_path / "o" / "ppm.jsonl").exists()
    assert main(["extract", "--trees", str(trees), "--format", "value", "--min-visits", "20",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no value rows from 1 trees (steps_below_min_visits: 9)" in capsys.readouterr().err
