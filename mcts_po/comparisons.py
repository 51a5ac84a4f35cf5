"""Comparing evaluation results: paired tests on the same problems and intervals over seeds.

Pure Python (no torch), used by the benchmark reports (scripts/bench_loop.py, scripts/loop_grid.py).

Two policies evaluated greedily on the SAME held-out problems are compared pairwise: only the
discordant problems (one right, the other wrong) carry information, and under "no difference"
each discordant problem is a fair coin. `mcnemar_exact(b, c)` is that exact two-sided binomial
test; it is more powerful than checking whether two Wilson intervals overlap, because the
problems both solve (or both miss) no longer add noise. Counts from several seeds can be summed
before the test (each seed's discordant problems are independent coins under the null).

`mean_interval(values)` is the mean over seeds with a 95 % Student-t interval (n - 1 degrees of
freedom): with two or three seeds it is wide, and it should be.

    from mcts_po.comparisons import mcnemar_exact, mean_interval, paired_counts
    counts = paired_counts(correct_a={"p1", "p2"}, correct_b={"p2"}, problems={"p1", "p2", "p3"})
    mcnemar_exact(counts["a_only"], counts["b_only"])      # 1.0: one discordant problem says nothing
    mean_interval([0.267, 0.20, 0.24])                       # (mean, low, high)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

# two-sided 95 % quantiles of Student's t (0.975 one-sided) for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959963984540054


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 0.975 quantile of Student's t (table to 30 degrees of freedom, then two Cornish-Fisher terms)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {degrees_of_freedom}")
    if degrees_of_freedom <= len(_T975):
        return _T975[degrees_of_freedom - 1]
    z, df = _Z975, degrees_of_freedom
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of `values` with a 95 % Student-t interval; low/high None below two values."""
    if not values:
        raise ValueError("mean_interval: no values")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return (mean, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (A right and B wrong; the reverse).

    Under the null each discordant problem goes either way with probability 1/2:
    p = min(1, 2 * P[Binomial(a_only + b_only, 1/2) <= min(a_only, b_only)]); 1.0 with no discordant problem.
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_counts(correct_a: Iterable[str], correct_b: Iterable[str], problems: Iterable[str]) -> dict[str, int]:
    """Both / a_only / b_only / neither over `problems`, from the problem ids each policy got right.

    Refuses ids that are not among the problems (results of different problem sets are not paired).
    """
    problems, a, b = set(problems), set(correct_a), set(correct_b)
    stray = (a | b) - problems
    if stray:
        raise ValueError(f"paired_counts: {len(stray)} correct ids are not among the {len(problems)} problems "
                         f"(e.g. {sorted(stray)[0]!r}); the two results come from different problem sets")
    return {"problems": len(problems), "both": len(a & b), "a_only": len(a - b), "b_only": len(b - a),
            "neither": len(problems - a - b)}
