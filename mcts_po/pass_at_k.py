"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on
Code", eq. 1), and the plain "any of the samples correct" count it replaces.

With n samples of a problem of which c are correct, the chance that k samples drawn without
replacement from those n contain a correct one is

    pass@k = 1 - C(n - c, k) / C(n, k)          (k <= n)

averaged over problems. It is unbiased for every k <= n, whereas "any of the first k samples
correct" (`any_correct`) is one draw of it: at k = n the two are equal, below n the count is
a noisy estimate, and reporting it for k < n from a run with more samples wastes them. The ratio
of binomials is computed as the product prod_{i = n-c+1}^{n} (1 - k / i), which never forms a
large binomial coefficient.

    from mcts_po.pass_at_k import pass_at_k, mean_pass_at_k, pass_at_k_ladder
    pass_at_k(5, 2, 2)                                   # 0.7
    mean_pass_at_k([[True, False], [False, False]], 1)   # 0.25
    pass_at_k_ladder(8)                                  # [1, 2, 4, 8]

Pure Python (no torch, no numpy): used by `mcts_po.evaluation` (`mcts-po eval`) and
scripts/bench_search.py.
"""

from __future__ import annotations

import math
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): the chance that k of the n samples (c correct) hold a correct one."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass@k: {name} must be an integer, got {value!r}")
    if n < 1:
        raise ValueError(f"pass@k needs at least one sample (n >= 1), got n = {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: the correct samples c must be in [0, n = {n}], got c = {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n: k = {k} with n = {n} samples "
                         f"(draw at least k samples per problem to estimate pass@{k})")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    remaining = 1.0  # C(n-c, k) / C(n, k) as a product of factors in (0, 1]
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def per_problem_pass_at_k(sample_correct: Sequence[Sequence[bool]], k: int) -> list[float]:
    """pass@k of each problem from its own samples (problems may have different sample counts)."""
    values = []
    for index, correct in enumerate(sample_correct):
        n = len(correct)
        if k > n:
            raise ValueError(f"pass@{k} needs at least {k} samples per problem; problem {index} has {n}")
        values.append(pass_at_k(n, sum(1 for c in correct if c), k))
    return values


def mean_pass_at_k(sample_correct: Sequence[Sequence[bool]], k: int) -> float:
    """The benchmark's pass@k: the mean of every problem's unbiased estimate."""
    if not sample_correct:
        raise ValueError("pass@k of no problems")
    values = per_problem_pass_at_k(sample_correct, k)
    return sum(values) / len(values)


def pass_at_k_summary(sample_correct: Sequence[Sequence[bool]], k: int) -> dict[str, float | int | str]:
    """pass@k over problems with its standard error (sample std of the per-problem estimates / sqrt(P))."""
    values = per_problem_pass_at_k(sample_correct, k)
    if not values:
        raise ValueError("pass@k of no problems")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"accuracy": round(mean, 4), "stderr": round(math.sqrt(variance / len(values)), 4),
            "problems": len(values), "samples_per_problem": min(len(c) for c in sample_correct),
            "estimator": "unbiased (Chen et al. 2021)"}


def any_correct(sample_correct: Sequence[Sequence[bool]], first: int | None = None) -> int:
    """Problems with a correct sample among their first `first` samples (all when None): the old,
    biased "pass@k" (any_correct@k)."""
    return sum(1 for correct in sample_correct if any(correct if first is None else correct[:first]))


def pass_at_k_ladder(n: int) -> list[int]:
    """The k reported from n samples: 1, 2, 4, ... below n, and n itself."""
    if n < 1:
        return []
    ladder, k = [], 1
    while k < n:
        ladder.append(k)
        k *= 2
    return ladder + [n]
