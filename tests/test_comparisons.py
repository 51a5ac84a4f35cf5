"""Paired tests and over-seed intervals (mcts_po/comparisons.py), checked against hand-computed values.

    pytest tests/test_comparisons.py -q
"""

from __future__ import annotations

import math

import pytest

from mcts_po.comparisons import mcnemar_exact, mean_interval, paired_counts, t_quantile_975


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_discordant_problems():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # five discordant, all one way
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    # 10 vs 2: P[X <= 2] for Binomial(12, 1/2) = (1 + 12 + 66) / 4096, doubled
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(7, 7) == 1.0  # capped: a balanced split is no evidence
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_mean_interval_uses_student_t_with_n_minus_one_degrees_of_freedom():
    mean, low, high = mean_interval([0.2, 0.3])
    half = 12.706 * math.sqrt(0.005) / math.sqrt(2)  # sd of (0.2, 0.3) = sqrt(0.005); t(1) = 12.706
    assert mean == pytest.approx(0.25) and low == pytest.approx(0.25 - half) and high == pytest.approx(0.25 + half)
    mean, low, high = mean_interval([0.1, 0.2, 0.3])
    assert (low, high) == pytest.approx((0.2 - 4.303 * 0.1 / math.sqrt(3), 0.2 + 4.303 * 0.1 / math.sqrt(3)))
    assert mean_interval([0.4]) == (0.4, None, None)
    with pytest.raises(ValueError):
        mean_interval([])
    assert t_quantile_975(30) == 2.042  # the table, then the expansion: t(40) = 2.021, t(120) = 1.980
    assert t_quantile_975(40) == pytest.approx(2.021, abs=1e-3) and t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_paired_counts_split_the_problems_and_refuse_other_problem_sets():
    counts = paired_counts({"a", "b"}, {"b", "c"}, ["a", "b", "c", "d"])
    assert counts == {"problems": 4, "both": 1, "a_only": 1, "b_only": 1, "neither": 1}
    with pytest.raises(ValueError, match="different problem sets"):
        paired_counts({"z"}, set(), ["a", "b"])
