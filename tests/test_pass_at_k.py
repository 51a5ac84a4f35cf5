"""Tests of `mcts_po.pass_at_k` (the unbiased pass@k estimator of Chen et al. 2021) against values
computed by hand from 1 - C(n-c, k) / C(n, k), and of the report of scripts/bench_search.py reading
old and new best-of-N results.

    PYTHONPATH=. .venv/bin/pytest tests/test_pass_at_k.py -q
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from mcts_po.pass_at_k import any_correct, mean_pass_at_k, pass_at_k, pass_at_k_ladder, pass_at_k_summary


def test_pass_at_k_of_five_samples_two_correct_by_hand():
    # 1 - C(3, k) / C(5, k): k=1: 1 - 3/5; k=2: 1 - 3/10; k=3: 1 - 1/10; k=4, 5: C(3, k) = 0
    expected = {1: 0.4, 2: 0.7, 3: 0.9, 4: 1.0, 5: 1.0}
    for k, value in expected.items():
        assert pass_at_k(5, 2, k) == pytest.approx(value, abs=1e-12), k
        assert pass_at_k(5, 2, k) == pytest.approx(1 - math.comb(3, k) / math.comb(5, k), abs=1e-12)


def test_no_correct_sample_gives_zero_and_all_correct_gives_one():
    assert [pass_at_k(5, 0, k) for k in range(1, 6)] == [0.0] * 5
    assert [pass_at_k(5, 5, k) for k in range(1, 6)] == [1.0] * 5
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


def test_the_product_form_stays_exact_where_binomials_are_huge():
    # C(1000, 500) has 300 digits; the product never forms it
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)  # one correct of 1000, draw half
    assert pass_at_k(1000, 10, 1) == pytest.approx(0.01, abs=1e-12)
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - (100 * 99 * 98) / (200 * 199 * 198), abs=1e-12)


def test_k_above_n_and_bad_counts_are_clear_errors():
    with pytest.raises(ValueError, match=r"1 <= k <= n: k = 6 with n = 5 samples"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError, match=r"1 <= k <= n: k = 0"):
        pass_at_k(5, 2, 0)
    with pytest.raises(ValueError, match=r"c must be in \[0, n = 5\], got c = 6"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="n >= 1"):
        pass_at_k(0, 0, 1)
    with pytest.raises(ValueError, match="k must be an integer"):
        pass_at_k(5, 2, 1.5)
    with pytest.raises(ValueError, match="pass@3 needs at least 3 samples per problem; problem 1 has 2"):
        mean_pass_at_k([[True, False, True], [True, False]], 3)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)


def test_mean_over_problems_and_its_difference_from_any_of_the_first_k():
    samples = [[True, False, False, False, True],    # c = 2: pass@2 = 0.7
               [False, False, False, False, False],  # c = 0: 0
               [False, False, False, False, True]]   # c = 1: pass@2 = 1 - C(4,2)/C(5,2) = 0.4
    assert mean_pass_at_k(samples, 2) == pytest.approx((0.7 + 0.0 + 0.4) / 3, abs=1e-12)
    assert mean_pass_at_k(samples, 1) == pytest.approx((2 / 5 + 0 + 1 / 5) / 3, abs=1e-12)
    # "any of the first 2 correct" counts only problem 0; the unbiased estimate also credits problem 2
    assert any_correct(samples, first=2) == 1 and any_correct(samples) == 2
    assert mean_pass_at_k(samples, 5) == pytest.approx(any_correct(samples) / 3, abs=1e-12)  # k = n: equal
    summary = pass_at_k_summary(samples, 2)
    assert summary["accuracy"] == round(1.1 / 3, 4) and summary["problems"] == 3 and summary["samples_per_problem"] == 5
    spread = [0.7, 0.0, 0.4]
    mean = sum(spread) / 3
    assert summary["stderr"] == round(math.sqrt(sum((v - mean) ** 2 for v in spread) / 2 / 3), 4)


def test_ladder_of_reported_k():
    assert pass_at_k_ladder(1) == [1]
    assert pass_at_k_ladder(4) == [1, 2, 4]
    assert pass_at_k_ladder(5) == [1, 2, 4, 5]
    assert pass_at_k_ladder(8) == [1, 2, 4, 8]
    assert pass_at_k_ladder(0) == []


def load_bench():
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_search.py"
    spec = importlib.util.spec_from_file_location("bench_search_pass_at_k", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_report_reads_old_and_new_best_of_n_keys():
    bench = load_bench()
    correct = [[True, False, False], [False, False, True]]
    samples = [{"problem_id": str(i), "answers": ["1"] * 3, "correct": c, "tokens": [10, 10, 10]} for i, c in enumerate(correct)]
    # results written before any_correct / pass_at_n existed: "solved" in the curve; pass@N from the samples
    old = {"samples_per_problem": 3, "generated_tokens": 60, "majority_correct": 0, "best_of_n_solved": 2,
           "best_of_n_curve": [{"n": 1, "solved": 1, "generated_tokens": 20}, {"n": 2, "solved": 1, "generated_tokens": 40},
                               {"n": 3, "solved": 2, "generated_tokens": 60}],
           "samples": samples}
    below, above = bench.flat_entries_at_tokens(old, 45)
    assert (below["n"], below["any_correct"], below["pass_at_n"]) == (2, 1, round(1 - 1 / 3, 4))  # c = 1 each: 1 - C(2,2)/C(3,2)
    assert (above["n"], above["any_correct"], above["pass_at_n"]) == (3, 2, 1.0)
    assert "solved" not in below and old["best_of_n_curve"][1] == {"n": 2, "solved": 1, "generated_tokens": 40}  # not mutated
    # the oldest results: no curve, whole run only, and no per-sample verdicts
    oldest = {"samples_per_problem": 3, "generated_tokens": 60, "majority_correct": 0, "best_of_n_solved": 2}
    assert bench.flat_entries_at_tokens(oldest, 45) == [{"n": 3, "generated_tokens": 60, "any_correct": 2, "majority_correct": 0}]
    # the pass@k ladder of the flat samples: recorded, else from the verdicts (c = 1, 1 of n = 3)
    assert bench.flat_pass_at_k(old) == {"1": round(1 / 3, 4), "2": round(2 / 3, 4), "3": 1.0}
    assert bench.flat_pass_at_k({**old, "pass_at_k": {"1": 0.5}}) == {"1": 0.5}
    assert bench.flat_pass_at_k(oldest) == {}


@pytest.mark.slow
def test_real_smollm2_eval_writes_pass_at_k_beside_maj_and_any_correct(tmp_path, capsys):
    """`mcts-po eval --k 4` with the real SmolLM2-135M (transformers backend, 6 one-operation
    arithmetic problems, easy enough that some samples are right): summary.json carries greedy, maj@4, any_correct@4 and pass@1/2/4, and
    the pass@j agree with 1 - C(n-c, j)/C(n, j) recomputed from results.jsonl's sample verdicts.
    Run under the CPU lock: flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q -m slow tests/test_pass_at_k.py"""
    import json

    pytest.importorskip("torch")
    from mcts_po.cli import main
    from mcts_po.models import resolve_model

    try:
        model = resolve_model("smollm2-135m")
    except Exception as exc:  # the package is not installed
        pytest.skip(f"SmolLM2 unavailable: {exc}")
    out = tmp_path / "eval"
    assert main(["eval", "--model", model, "--task", "arithmetic", "--task-options", '{"num_ops": 1, "max_value": 10}',
                 "--split", "test", "--limit", "6", "--backend", "transformers", "--k", "4", "--max-tokens", "96",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 6 and all(len(r["sample_correct"]) == 4 for r in records)
    counts = [sum(r["sample_correct"]) for r in records]
    assert any(counts), "no correct sample at all: the pass@j check below would be trivial"
    for j in (1, 2, 4):
        by_hand = sum(1 - math.comb(4 - c, j) / math.comb(4, j) for c in counts) / 6
        assert summary[f"pass@{j}"]["accuracy"] == round(by_hand, 4)
        assert f"pass@{j}" in printed
    assert summary["any_correct@4"]["correct"] == sum(1 for c in counts if c > 0)
    assert summary["pass@4"]["accuracy"] == summary["any_correct@4"]["accuracy"]
    assert summary["maj@4"]["total"] == 6 and "greedy" in summary
    print(f"\nreal SmolLM2 eval, counts of correct samples per problem {counts}: "
          f"{ {k: summary[k]['accuracy'] for k in summary if k == 'greedy' or k.startswith(('maj@', 'any_correct@', 'pass@'))} }")
