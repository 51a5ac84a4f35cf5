"""The flat baselines against the real model: SmolLM2-135M samples arithmetic solutions to a token
budget, the verifier keeps the correct ones, and one rft round raises their likelihood.

    .venv/bin/python -m pytest -q tests/test_flat_baselines_real.py     # about 2 minutes on 2 CPU cores

The arithmetic of budgets, waves and pairing is checked exactly in tests/test_flat_baselines.py.
"""

from __future__ import annotations

import pytest

from mcts_po.extract.config import ExtractConfig
from mcts_po.flat_baselines import outcome_dpo_rows, read_samples
from mcts_po.io_utils import read_jsonl
from mcts_po.loop import LoopConfig, run_loop
from mcts_po.tasks import get_task

TASK_OPTIONS = {"num_ops": 1, "max_value": 20}


def completion_logprobs(model_path: str, rows: list[dict]) -> list[float]:
    """log p(completion + EOS | prompt) of each row under the model (float32, no autocast)."""
    import torch

    from mcts_po.train.checkpoints import load_causal_lm, load_tokenizer
    from mcts_po.train.logprobs import build_pair_batch, sequence_logprobs

    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, torch.device("cpu")).eval()
    batch = build_pair_batch(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows],
                             [True] * len(rows), 256)
    with torch.no_grad():
        return sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask).tolist()


@pytest.mark.slow
def test_smollm2_rft_round_samples_to_the_budget_keeps_verified_samples_and_learns_them(tmp_path):
    from mcts_po.models import resolve_model

    budget = 800
    config = LoopConfig.from_yaml_dict({
        "rounds": 1, "method": "rft", "model": "smollm2-135m", "backend": "transformers",
        "backend_options": {"device": "cpu"}, "task": "arithmetic", "task_options": TASK_OPTIONS,
        "problems_per_round": 4, "eval_initial": False, "eval_limit": 2, "eval_max_tokens": 32, "progress": False,
        "flat_tokens_per_round": budget, "flat_max_tokens": 96, "sampling": {"temperature": 0.7, "top_p": 0.95},
        "train": {"max_steps": 3, "batch_size": 2, "learning_rate": 5e-5, "max_length": 256, "device": "cpu"},
    }, "slow test")
    run_dir = tmp_path / "run"
    metrics = run_loop(config, run_dir, log=print, plot=False)
    sampled = metrics["rounds"][0]["search"]
    records = read_samples(run_dir / "round_0" / "search" / "samples.jsonl")
    assert sampled["generated_tokens"] == sum(r["generated_tokens"] for r in records) >= budget
    assert sampled["budget_tokens"] == budget and sampled["budget_source"] == "flat_tokens_per_round"

    # the verifier's verdicts hold, and only whole verified samples are trained on
    task = get_task("arithmetic", **TASK_OPTIONS)
    problems = {p.id: p for p in task.load("train", limit=4)}
    assert {r["problem_id"] for r in records} == set(problems)
    for r in records:
        assert r["correct"] == task.is_correct(r["text"], problems[r["problem_id"]])
    rows = [row for _, row in read_jsonl(run_dir / "round_0" / "data" / "sft.jsonl")]
    assert rows, f"no correct sample in {len(records)} samples: {[r['answer'] for r in records]}"
    assert all(task.is_correct(r["completion"], problems[r["problem_id"]]) for r in rows)
    assert len({(r["problem_id"], r["completion"]) for r in rows}) == len(rows)
    pairs = outcome_dpo_rows(records, ExtractConfig())
    for pair in pairs:
        assert task.is_correct(pair["chosen"], problems[pair["problem_id"]])
        assert not task.is_correct(pair["rejected"], problems[pair["problem_id"]])

    # one rft round: the policy gives its training completions more likelihood than the initial one
    policy = metrics["rounds"][0]["train"]["policy"]
    before = completion_logprobs(resolve_model("smollm2-135m"), rows)
    after = completion_logprobs(policy, rows)
    assert sum(after) / len(after) > sum(before) / len(before), (before, after)
    assert len(metrics["accuracy_by_policy"]) == 1  # policy 1 evaluated (no baseline asked for)
