"""Flat-sampling baselines (mcts_po/flat_baselines.py and the loop's rft / outcome-dpo methods).

Exact arithmetic with a scripted backend: the token budget is reached and not overshot by more
than the last wave's estimate, waves go to the problems with the fewest samples, a killed run
resumes from its last whole wave, rows keep only whole verified samples once per problem and
pair along anti-diagonals; the loop samples to the budget of a tree run's search marker.
The real-model run: tests/test_flat_baselines_real.py.

    .venv/bin/python -m pytest -q tests/test_flat_baselines.py
"""

from __future__ import annotations

import json

import pytest

from mcts_po.backends.base import FINISH_EOS, FINISH_LENGTH, Completion, GenerationResult
from mcts_po.extract.config import ExtractConfig
from mcts_po.flat_baselines import (
    next_wave_size,
    outcome_dpo_rows,
    read_samples,
    rft_rows,
    sample_to_budget,
    wave_counts,
)
from mcts_po.io_utils import UserError
from mcts_po.tasks import get_task

TASK_OPTIONS = {"num_ops": 1, "max_value": 20}


class CyclingBackend:
    """Sample s of problem i (counted per problem over all calls) answers correctly when s % 3 == i % 3
    and generates 10 + s tokens; every 4th sample of problem 0 is cut at max_tokens."""

    name = model = "cycling"

    def __init__(self, problems, fail_on_call: int | None = None):
        self.problems = {p.question: (i, p.answer) for i, p in enumerate(problems)}
        self.seen = [0] * len(problems)
        self.calls: list[list[int]] = []
        self.fail_on_call = fail_on_call

    def render_chat(self, messages, add_generation_prompt=True):
        return "<q>" + messages[-1]["content"]

    def generate(self, requests):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.calls.append([r.n for r in requests])
        results = []
        for request in requests:
            i, gold = next(v for q, v in self.problems.items() if request.prompt.endswith(q))
            completions = []
            for _ in range(request.n):
                s = self.seen[i]
                self.seen[i] += 1
                answer = gold if s % 3 == i % 3 else str(int(gold) + 100 + s)
                cut = i == 0 and s % 4 == 3
                completions.append(Completion(text=f"Work {s}. The answer is {answer}.", num_tokens=10 + s,
                                              finish_reason=FINISH_LENGTH if cut else FINISH_EOS))
            results.append(GenerationResult(completions=completions, prompt_tokens=7))
        return results

    def close(self):
        pass


def problems(n=3):
    return get_task("arithmetic", **TASK_OPTIONS).load("train", limit=n)


def test_waves_go_to_the_problems_with_fewest_samples_and_size_by_the_mean_length():
    assert wave_counts([0, 0, 0], 3) == [1, 1, 1]
    assert wave_counts([2, 1, 1], 4) == [1, 2, 1]
    assert wave_counts([5, 0], 0) == [0, 0]
    assert next_wave_size(4, 0, 0, 100, 32) == 4  # first wave: one each
    assert next_wave_size(4, 40, 4, 100, 32) == 6  # 60 left at 10 per sample
    assert next_wave_size(4, 40, 4, 41, 32) == 1
    assert next_wave_size(4, 40, 4, 10_000, 32) == 32  # capped


def test_sampling_reaches_the_budget_records_every_sample_and_counts(tmp_path):
    task = get_task("arithmetic", **TASK_OPTIONS)
    probs = problems(3)
    backend = CyclingBackend(probs)
    out = tmp_path / "samples.jsonl"
    summary = sample_to_budget(backend, task, probs, 200, out_file=out, temperature=0.7, top_p=0.95, max_tokens=64)
    records = read_samples(out)
    used = sum(r["generated_tokens"] for r in records)
    assert summary["generated_tokens"] == used >= 200
    assert summary["budget_overshoot_tokens"] == used - 200
    # the last wave is sized to the remaining budget at the mean length: it overshoots by less than one wave
    last_wave = max(r["wave"] for r in records)
    last_tokens = sum(r["generated_tokens"] for r in records if r["wave"] == last_wave)
    assert used - last_tokens < 200
    # first call: one sample of each problem; samples stay balanced across problems
    assert backend.calls[0] == [1, 1, 1]
    counts = [sum(1 for r in records if r["problem_id"] == p.id) for p in probs]
    assert max(counts) - min(counts) <= 1
    assert summary["samples"] == len(records) == sum(backend.seen)
    # prompt tokens: 7 per request (the scripted backend's), counted once per request
    assert summary["prompt_tokens"] == 7 * sum(len(call) for call in backend.calls)
    assert summary["correct_samples"] == sum(r["correct"] for r in records)
    assert summary["problems_with_correct_sample"] == 3 and summary["solved_share"] == 1.0
    assert all(r["prompt"] == "<q>" + next(p.question for p in probs if p.id == r["problem_id"]) for r in records)


def test_a_killed_sampling_resumes_from_its_last_whole_wave(tmp_path):
    task = get_task("arithmetic", **TASK_OPTIONS)
    probs = problems(3)
    out = tmp_path / "samples.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sample_to_budget(CyclingBackend(probs, fail_on_call=2), task, probs, 400, out_file=out,
                         temperature=0.7, top_p=1.0, max_tokens=64)
    before = read_samples(out)
    assert {r["wave"] for r in before} == {0, 1}
    # a torn tail (a kill inside a write) is dropped, not fatal
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"problem_id": "x", "wav')
    assert read_samples(out) == before and out.read_bytes().endswith(b"\n")
    resumed_backend = CyclingBackend(probs)
    summary = sample_to_budget(resumed_backend, task, probs, 400, out_file=out, temperature=0.7, top_p=1.0,
                               max_tokens=64)
    after = read_samples(out)
    assert after[:len(before)] == before and summary["resumed_samples"] == len(before)
    assert summary["generated_tokens"] >= 400
    assert min(r["wave"] for r in after[len(before):]) == 2
    # a finished run samples nothing more
    again = CyclingBackend(probs)
    sample_to_budget(again, task, probs, 400, out_file=out, temperature=0.7, top_p=1.0, max_tokens=64)
    assert again.calls == []


def test_sampling_refuses_greedy_an_empty_budget_and_another_runs_file(tmp_path):
    task = get_task("arithmetic", **TASK_OPTIONS)
    probs = problems(2)
    with pytest.raises(UserError, match="temperature"):
        sample_to_budget(CyclingBackend(probs), task, probs, 10, out_file=tmp_path / "a.jsonl", temperature=0,
                         top_p=1, max_tokens=8)
    with pytest.raises(UserError, match="budget"):
        sample_to_budget(CyclingBackend(probs), task, probs, 0, out_file=tmp_path / "a.jsonl", temperature=1,
                         top_p=1, max_tokens=8)
    other = tmp_path / "b.jsonl"
    other.write_text(json.dumps({"problem_id": "elsewhere", "wave": 0, "generated_tokens": 3}) + "\n")
    with pytest.raises(UserError, match="another run"):
        sample_to_budget(CyclingBackend(probs), task, probs, 10, out_file=other, temperature=1, top_p=1, max_tokens=8)


def record(problem, index, text, correct, cut=False, wave=0):
    return {"problem_id": problem, "wave": wave, "sample_index": index, "prompt": f"P{problem}", "question": f"Q{problem}",
            "gold": "5", "dataset": "arithmetic", "text": text, "answer": "5" if correct else "6", "correct": correct,
            "generated_tokens": 4, "cut_at_max_tokens": cut}


def test_rft_rows_keep_whole_correct_samples_once_per_problem():
    records = [record("a", 0, "2 + 3 = 5. The answer is 5.", True),
               record("a", 1, "2+3 = 5.  The answer is 5.", True),  # equal after normalisation
               record("a", 2, "2 + 3 = 6. The answer is 6.", False),
               record("a", 3, "2 + 3 is 5. The answer is 5", True, cut=True),  # cut at max_tokens
               record("b", 0, "The answer is 5.", True),
               record("b", 0, "Also: the answer is 5.", True, wave=1)]
    counters: dict[str, int] = {}
    rows = rft_rows(records, counters)
    assert [(r["problem_id"], r["completion"]) for r in rows] == [
        ("a", "2 + 3 = 5. The answer is 5."), ("b", "The answer is 5."), ("b", "Also: the answer is 5.")]
    assert counters == {"samples_duplicate": 1, "samples_cut_at_max_tokens": 1}
    assert rows[0]["prompt"] == "Pa" and rows[0]["messages"][1] == {"role": "assistant", "content": rows[0]["completion"]}


def test_outcome_dpo_pairs_along_anti_diagonals_capped_and_without_near_duplicates():
    records = [record("a", 0, "c0: 2 + 3 = 5", True), record("a", 1, "w0: 2 + 3 = 7", False),
               record("a", 2, "c1: 3 + 2 = 5", True), record("a", 3, "w1: 2 + 3 = 8", False),
               record("a", 4, "w2: 2 + 3 = 9", False, cut=True),
               record("b", 0, "only wrong 1", False), record("b", 1, "only wrong 2", False)]
    rows = outcome_dpo_rows(records, ExtractConfig(max_pairs_per_tree=3))
    assert [(r["chosen_index"], r["rejected_index"]) for r in rows] == [(0, 1), (0, 3), (2, 1)]
    assert all(r["chosen_ends_solution"] and r["rejected_ends_solution"] for r in rows)
    near = [record("c", 0, "So 2 + 3 = 5 and the answer is 5.", True),
            record("c", 1, "So 2 + 3 = 5, and the answer is 5", False)]
    counters: dict[str, int] = {}
    assert outcome_dpo_rows(near, ExtractConfig(), counters) == []
    assert counters == {"pairs_near_duplicate": 1}
    assert len(outcome_dpo_rows(near, ExtractConfig(dedup_threshold=1.0))) == 1


def test_outcome_dpo_rows_train_as_plain_dpo_pairs_with_eos_on_both_sides():
    from mcts_po.train.config import TrainConfig
    from mcts_po.train.examples import pair_examples_from_rows

    rows = outcome_dpo_rows([record("a", 0, "right", True), record("a", 1, "wrong", False)], ExtractConfig())
    [example] = pair_examples_from_rows(rows, "dpo", TrainConfig())
    assert (example.chosen, example.rejected, example.chosen_eos, example.rejected_eos) == ("right", "wrong", True, True)


# ---------------------------------------------------------------- in the loop


def loop_config(tmp_path, method="rft", **overrides):
    from mcts_po.loop import LoopConfig

    values = {"rounds": 1, "method": method, "task": "arithmetic", "task_options": TASK_OPTIONS,
              "problems_per_round": 3, "eval_initial": False, "progress": False,
              "sampling": {"temperature": 0.7}, "flat_budget_run": str(tmp_path / "tree_run"), **overrides}
    return LoopConfig.from_yaml_dict(values, "test")


def test_flat_methods_need_one_budget_and_refuse_tree_only_settings(tmp_path):
    from mcts_po.loop import LoopConfig

    with pytest.raises(UserError, match="exactly one"):
        loop_config(tmp_path, flat_budget_run="")
    with pytest.raises(UserError, match="exactly one"):
        loop_config(tmp_path, flat_tokens_per_round=100)
    with pytest.raises(UserError, match="temperature"):
        loop_config(tmp_path, sampling={"temperature": 0.0})
    with pytest.raises(UserError, match="not to step-dpo"):
        LoopConfig.from_yaml_dict({"method": "step-dpo", "flat_tokens_per_round": 10}, "test")
    config = loop_config(tmp_path, method="outcome-dpo")
    assert (config.flat, config.extract_format) == (True, "dpo")
    assert loop_config(tmp_path).extract_format == "sft"


def test_the_loop_samples_to_the_tree_runs_search_tokens_and_trains_the_mapped_method(tmp_path, monkeypatch):
    from mcts_po import loop as loop_module
    from mcts_po.io_utils import atomic_write_json
    from mcts_po.loop import LoopPhases, marker_path, run_loop

    tree_round = tmp_path / "tree_run" / "round_0"
    tree_round.mkdir(parents=True)
    atomic_write_json(marker_path(tree_round, "search"), {"phase": "search", "seconds": 1.0, "finished_at": 0,
                                                           "result": {"generated_tokens": 150}})
    config = loop_config(tmp_path, method="outcome-dpo")
    backend = CyclingBackend(problems(3))
    trained = {}

    def fake_train(policy, rows, method, train_config, out):
        trained.update(method=method, rows=rows)
        out.mkdir(parents=True, exist_ok=True)
        (out / "training_log.json").write_text(json.dumps({"history": [], "optimizer_steps": 1, "seconds": 0.1}))
        return out

    monkeypatch.setattr("mcts_po.train.trainer.train_preferences", fake_train)

    class Phases(LoopPhases):
        def evaluate(self, policy, out):
            return {"accuracy": 0.5, "correct": 1, "problems": 2, "ci95": [0.1, 0.9], "generated_tokens": 0}

    phases = Phases(config, lambda message: None, engines=loop_module.BackendCache(lambda model: backend))
    metrics = run_loop(config, tmp_path / "flat_run", phases=phases, log=lambda message: None, plot=False)
    search = metrics["rounds"][0]["search"]
    assert search["budget_tokens"] == 150 and search["generated_tokens"] >= 150
    assert search["budget_source"].endswith("round_0/search.done.json")
    assert metrics["rounds"][0]["search_generated_tokens"] == search["generated_tokens"]
    data = tmp_path / "flat_run" / "round_0" / "data"
    assert (data / "dpo.jsonl").exists() and json.loads((data / "stats.json").read_text())["method"] == "outcome-dpo"
    assert trained["method"] == "dpo" and len(trained["rows"]) == metrics["rounds"][0]["rows"] > 0
    # round 0 of the problems the tree method searched: the same train slice
    searched = {r["problem_id"] for r in read_samples(tmp_path / "flat_run" / "round_0" / "search" / "samples.jsonl")}
    assert searched == {p.id for p in problems(3)}


def test_a_flat_run_without_the_tree_runs_marker_says_what_to_run(tmp_path):
    from mcts_po.loop import LoopPhases

    phases = LoopPhases(loop_config(tmp_path), lambda message: None)
    with pytest.raises(UserError, match="flat_budget_run: .*round_0.search.done.json is missing: run round 0's search of that loop first"):
        phases.flat_budget(0)


def test_share_round0_gives_a_flat_run_the_baseline_but_not_the_trees(tmp_path):
    from mcts_po.io_utils import atomic_write_json
    from mcts_po.loop import BASELINE_DIR, marker_path, share_round0

    source = tmp_path / "src"
    for sub, phase in ((BASELINE_DIR, "eval"), ("round_0", "search")):
        (source / sub).mkdir(parents=True)
        atomic_write_json(marker_path(source / sub, phase), {"seconds": 1, "result": {}})
    (source / BASELINE_DIR / "summary.json").write_text("{}")
    (source / "round_0" / "search").mkdir()
    assert share_round0(source, tmp_path / "flat", search=False) == [f"{BASELINE_DIR}/eval"]
    assert not (tmp_path / "flat" / "round_0").exists()
