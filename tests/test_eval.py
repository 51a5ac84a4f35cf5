"""Tests of `mcts_po.evaluation`, `mcts-po eval` (Wilson intervals, maj@k voting, resume, CLI errors) and `mcts-po train`.

A scripted backend stands in for the model in the eval tests (exact counts can be asserted); the
train-command tests use the tiny random Llama of tests/test_trainer.py:

    .venv/bin/pytest -q tests/test_eval.py
"""

from __future__ import annotations

import json
import math

import pytest

from mcts_po.backends.base import Completion, GenerationResult
from mcts_po.cli import main
from mcts_po.evaluation import (
    PARTIAL_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    EvalConfig,
    best_of_n_at_tokens,
    best_of_n_curve,
    evaluate_model,
    format_summary,
    majority_answer,
    normalise_answer,
    wilson_interval,
)
from mcts_po.tasks import get_task

TASK_OPTIONS = {"num_ops": 2, "max_value": 20}


class ScriptedBackend:
    """Greedy: correct on problems whose index is a multiple of 3. Samples (n=k): problem i gets
    the gold answer in `i % 4` of its samples, a shared wrong answer in the others."""

    name = "scripted"
    model = "scripted"

    def __init__(self, problems):
        self.index = {p.question.strip(): (i, p.answer) for i, p in enumerate(problems)}
        self.calls = 0
        self.closed = False

    def render_chat(self, messages, add_generation_prompt=True):
        return messages[-1]["content"]

    def _lookup(self, prompt):
        for question, value in self.index.items():
            if prompt.startswith(question):
                return value
        raise AssertionError(f"unknown prompt {prompt[:60]!r}")

    def generate(self, requests):
        self.calls += 1
        results = []
        for request in requests:
            i, gold = self._lookup(request.prompt)
            if request.temperature == 0:
                texts = [f"The answer is {gold if i % 3 == 0 else int(gold) + 1}."]
            else:
                texts = [f"The answer is {gold if s < i % 4 else 999999}." for s in range(request.n)]
            results.append(GenerationResult(completions=[Completion(text=t, num_tokens=5) for t in texts],
                                            prompt_tokens=10))
        return results

    def close(self):
        self.closed = True


def problems(limit=12):
    return get_task("arithmetic", **TASK_OPTIONS).load("test", limit=limit)


def config(**overrides):
    values = dict(model="scripted", task="arithmetic", task_options=TASK_OPTIONS, split="test", limit=12,
                  backend="transformers", chunk_size=5)
    values.update(overrides)
    return EvalConfig(**values)


def test_wilson_interval_matches_hand_computed_values():
    low, high = wilson_interval(5, 100)
    assert low == pytest.approx(0.021544, abs=1e-6)
    assert high == pytest.approx(0.111750, abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.27753, abs=1e-5)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] == pytest.approx(0.72247, abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    # symmetric around 1/2
    low, high = wilson_interval(50, 100)
    assert low + high == pytest.approx(1.0) and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 100 + 1.96**2 / 40000) / (1 + 1.96**2 / 100), rel=1e-4)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(11, 10)


def test_majority_vote_normalises_and_breaks_ties_by_first_stated():
    assert normalise_answer(" 1,200.50 ") == "1200.5"
    assert normalise_answer("$42$") == "42"
    assert normalise_answer("7.0") == "7"
    assert majority_answer(["3", "4", "4.0", None, "3"]) == "3"  # 2 votes each: first stated wins
    assert majority_answer(["4", "3", "4.0", None, "3", "4"]) == "4"
    assert majority_answer([None, None]) is None
    assert majority_answer([]) is None


def test_best_of_n_curve_counts_prefixes_of_the_samples_and_matches_a_token_budget():
    correct = [[False, True, False], [False, False, False], [True, False, True]]
    tokens = [[10, 20, 30], [5, 5, 5], [1, 2, 3]]
    answers = [["1", "2", "2"], ["9", "8", "8"], ["3", "4", "3"]]
    gold = ["2", "7", "3"]
    curve = best_of_n_curve(correct, tokens, answers, lambda i, answer: answer == gold[i])
    assert [e["any_correct"] for e in curve] == [1, 2, 2]
    # unbiased pass@N from all 3 samples (c = 1, 0, 2): pass@1 = (1/3 + 0 + 2/3) / 3; pass@2 = (2/3 + 0 + 1) / 3
    assert [e["pass_at_n"] for e in curve] == [round(1 / 3, 4), round(5 / 9, 4), round(2 / 3, 4)]
    assert [e["generated_tokens"] for e in curve] == [16, 43, 81]
    # maj@1: "1","9","3" -> 1 right; maj@2: ties go to the first stated -> "1","9","3"; maj@3: "2","8","3"
    assert [e["majority_correct"] for e in curve] == [1, 1, 2]
    assert best_of_n_at_tokens(curve, 43) == (curve[1], curve[2])
    assert best_of_n_at_tokens(curve, 42) == (curve[0], curve[1])
    assert best_of_n_at_tokens(curve, 10) == (None, curve[0])
    assert best_of_n_at_tokens(curve, 100) == (curve[2], None)
    assert "majority_correct" not in best_of_n_curve(correct, tokens)[0]
    with pytest.raises(ValueError, match="same number of samples"):
        best_of_n_curve([[True], [True, False]], [[1], [1, 2]])


def test_evaluate_model_counts_greedy_and_majority_exactly(tmp_path):
    probs = problems()
    backend = ScriptedBackend(probs)
    summary = evaluate_model(config(k=4), tmp_path / "ev", backend=backend, progress=False)
    # greedy correct on indices 0,3,6,9
    assert summary["greedy"]["correct"] == 4 and summary["greedy"]["total"] == 12
    assert summary["greedy"]["accuracy"] == round(4 / 12, 4)
    assert summary["greedy"]["ci95"] == [round(v, 4) for v in wilson_interval(4, 12)]
    # samples: i % 4 correct out of 4 -> majority correct when i % 4 == 3 (3 vs 1); 2 vs 2 ties go to the
    # first stated answer, which is the gold one -> also correct when i % 4 == 2
    assert summary["maj@4"]["correct"] == sum(1 for i in range(12) if i % 4 in (2, 3)) == 6
    # the old "pass@k" (any of the k samples correct) is any_correct@k now; pass@j is the unbiased estimator
    assert summary["any_correct@4"]["correct"] == sum(1 for i in range(12) if i % 4 > 0) == 9
    assert summary["any_correct@4"]["ci95"] == [round(v, 4) for v in wilson_interval(9, 12)]
    assert [k for k in summary if k.startswith("pass@")] == ["pass@1", "pass@2", "pass@4"]
    # c = i % 4 of n = 4: pass@1 = mean(c / 4) = 6/16; pass@2 = mean(0, 1 - 3/6, 1 - 1/6, 1); pass@4 = any correct
    assert summary["pass@1"]["accuracy"] == 0.375
    assert summary["pass@2"]["accuracy"] == round((0 + 0.5 + 5 / 6 + 1) / 4, 4) == 0.5833
    assert summary["pass@4"]["accuracy"] == 0.75 == summary["any_correct@4"]["accuracy"]
    assert summary["pass@1"]["stderr"] == round(math.sqrt(0.9375 / 11 / 12), 4) == 0.0843
    assert summary["pass@1"]["problems"] == 12 and summary["pass@1"]["samples_per_problem"] == 4
    saved = json.loads((tmp_path / "ev" / SUMMARY_FILE).read_text())
    assert saved["pass@2"] == summary["pass@2"] and saved["any_correct@4"] == summary["any_correct@4"]
    assert "any_correct@4 0.7500  (9/12" in format_summary(summary)
    assert "pass@2   0.5833  (unbiased, mean over 12 problems of 4 samples each" in format_summary(summary)
    assert backend.closed is False  # a backend passed in belongs to the caller
    records = [json.loads(line) for line in (tmp_path / "ev" / RESULTS_FILE).read_text().splitlines()]
    assert [r["problem_id"] for r in records] == [p.id for p in probs]
    assert records[3]["greedy_correct"] is True and records[4]["greedy_correct"] is False
    assert records[4]["greedy_answer"] == str(int(probs[4].answer) + 1)
    assert records[2]["majority_answer"] == probs[2].answer and records[1]["majority_answer"] == "999999"
    assert not (tmp_path / "ev" / PARTIAL_FILE).exists()
    assert "greedy   0.3333  (4/12" in format_summary(summary)


def test_finished_evaluation_is_not_redone_and_partial_one_resumes(tmp_path):
    probs = problems()
    out = tmp_path / "ev"
    first = evaluate_model(config(), out, backend=ScriptedBackend(probs), progress=False)
    again_backend = ScriptedBackend(probs)
    assert evaluate_model(config(), out, backend=again_backend, progress=False) == first
    assert again_backend.calls == 0

    # a run killed after its first chunk (5 problems) and mid-line: only the 7 others are decoded again
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    lines = (out / RESULTS_FILE).read_text().splitlines(keepends=True)
    (resumed / PARTIAL_FILE).write_text("".join(lines[:5]) + lines[5][:20])
    (resumed / "eval_config.json").write_text(json.dumps(config().identity()))
    backend = ScriptedBackend(probs)
    summary = evaluate_model(config(), resumed, backend=backend, progress=False)
    assert backend.calls == 2  # 7 problems in chunks of 5
    assert summary["greedy"]["correct"] == first["greedy"]["correct"] == 4
    assert (resumed / RESULTS_FILE).read_text() == (out / RESULTS_FILE).read_text()


def test_partial_evaluation_with_other_settings_is_refused(tmp_path):
    from mcts_po.io_utils import UserError

    out = tmp_path / "ev"
    out.mkdir()
    (out / "eval_config.json").write_text(json.dumps(config(max_tokens=17).identity()))
    with pytest.raises(UserError, match="other settings"):
        evaluate_model(config(), out, backend=ScriptedBackend(problems()), progress=False)


def test_eval_config_validation_names_the_field():
    with pytest.raises(ValueError, match="EvalConfig.backend = 'gpu' is not one of: vllm, transformers, http"):
        config(backend="gpu")
    with pytest.raises(ValueError, match="EvalConfig.k must be >= 1"):
        config(k=0)
    with pytest.raises(ValueError, match="temperature must be > 0 for maj@k"):
        config(k=4, temperature=0.0)


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    code = main(["eval", "--out", str(tmp_path / "x"), "--task", "arithmetic", "--task-options", "[1]"])
    assert code == 2
    assert "mcts-po eval: error: argument --task-options: must be a JSON object" in capsys.readouterr().err
    code = main(["eval", "--out", str(tmp_path / "x"), "--backend", "tpu"])
    assert code == 2
    assert "EvalConfig.backend = 'tpu' is not one of" in capsys.readouterr().err


def test_cli_evaluates_with_a_scripted_backend(tmp_path, monkeypatch, capsys):
    import mcts_po.backends as backends

    made = []

    def fake_make_backend(name, model, seed=0, **options):
        made.append((name, model, seed))
        return ScriptedBackend(problems(6))

    monkeypatch.setattr(backends, "make_backend", fake_make_backend)
    code = main(["eval", "--out", str(tmp_path / "x"), "--task", "arithmetic", "--task-options", json.dumps(TASK_OPTIONS),
                 "--limit", "6", "--backend", "transformers", "--model", "m", "--seed", "3", "--no-progress"])
    assert code == 0
    assert made == [("transformers", "m", 3)]
    summary = json.loads((tmp_path / "x" / SUMMARY_FILE).read_text())
    assert summary["greedy"]["correct"] == 2 and summary["problems"] == 6
    assert "greedy   0.3333  (2/6" in capsys.readouterr().out


# ---------------------------------------------------------------- mcts-po train (tiny model, no real model)


def test_train_command_reads_an_extract_folder_and_the_rows_own_delimiter(tmp_path, capsys):
    from test_trainer import STEP_ROWS, save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    data = tmp_path / "data"
    data.mkdir()
    (data / "step-dpo.jsonl").write_text("".join(json.dumps(row) + "\n" for row in STEP_ROWS))
    code = main(["train", "--data", str(data), "--method", "step-dpo", "--model", base, "--out", str(tmp_path / "p1"),
                 "--max-steps", "2", "--num-epochs", "3", "--batch-size", "3", "--learning-rate", "1e-2", "--device", "cpu",
                 "--no-progress"])
    assert code == 0
    log = json.loads((tmp_path / "p1" / "training_log.json").read_text())
    assert log["optimizer_steps"] == 2 and log["rows"] == 3
    assert log["config"]["learning_rate"] == 0.01 and "step_delimiter" not in log["config"]
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 3 and printed["data"] == str(data / "step-dpo.jsonl")
    # An intermediate step without the delimiter column: a clear error naming the row, no training.
    rows = [dict(STEP_ROWS[1]), {k: v for k, v in STEP_ROWS[0].items() if k != "step_delimiter"}]
    (data / "step-dpo.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["train", "--data", str(data), "--method", "step-dpo", "--model", base, "--out", str(tmp_path / "p2"),
                 "--max-steps", "1", "--device", "cpu", "--no-progress"])
    assert code == 2 and not (tmp_path / "p2").exists()
    assert "row 1: an intermediate step" in capsys.readouterr().err


def test_train_command_defaults_and_names_missing_data(tmp_path, capsys):
    from mcts_po.commands.train import build_config, rows_file
    from mcts_po.io_utils import UserError

    (tmp_path / "tpo.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match=r"has no step-dpo.jsonl \(has: tpo.jsonl\)"):
        rows_file(str(tmp_path), "step-dpo")
    code = main(["train", "--data", str(tmp_path / "nope"), "--method", "tpo", "--model", "m", "--out", str(tmp_path / "o")])
    assert code == 2 and "no such file or folder" in capsys.readouterr().err
    import argparse

    from mcts_po.commands.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--method", "tpo", "--model", "m", "--out", "o"])
    from mcts_po.train.config import TrainConfig

    assert build_config(args) == TrainConfig()
