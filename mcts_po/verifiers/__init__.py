"""Answer verifiers: is a predicted final answer equal to the gold one?

Two verifiers, chosen by name with `get_verifier("numeric" | "math")`:

* `verify_numeric(pred, gold)` — GSM8K-style. Both sides go through `normalize_number`
  and are compared as exact rationals (`fractions.Fraction`); when either side was
  written as a decimal, a relative difference up to 1e-6 also counts as equal.
* `verify_math(pred, gold, timeout=5.0)` — MATH-style LaTeX answers. Fast paths first
  (canonical string equality, then numeric equality via `normalize_number`), then
  math-verify (`parse` + `verify(gold, pred)`, gold first) in a separate worker process.

    from mcts_po.verifiers import get_verifier, extract_boxed
    verify = get_verifier("math")
    verify(extract_boxed(model_text), "\\frac{1}{2}")   # -> True / False, never raises

The package has two modules, one job each:
* `answers` — pure text: `extract_last_number`, `extract_boxed`, `normalize_number`,
  `canonical_latex`, `verify_numeric` and the MATH checks that need no math-verify
  (`math_fast_verdict`). No processes; what `normalize_number` accepts is listed there.
* `math_verify_pool` — math-verify in persistent, killable worker processes (timeouts,
  restarts, the 4 GiB memory limit, shutdown at exit, dropping the pool after a fork):
  `verify_in_worker`, `configure_math_workers`, `warm_up_math_workers`,
  `shutdown_math_workers`.
This face joins them (`verify_math`), names the verifiers (`VERIFIERS`, `get_verifier`) and
re-exports the public names of both. Tests: tests/test_verifiers.py.

Contract of both verifiers: they return a bool and never raise for any input (non-strings
count as their `str()`, `None` is False); an input longer than `MAX_ANSWER_CHARS`
(10,000 characters) on either side is rejected up front as False. Only
`KeyboardInterrupt`/`SystemExit` pass through.
"""

from __future__ import annotations

import logging
from typing import Callable

from mcts_po.verifiers.answers import (
    MAX_ANSWER_CHARS,
    answer_text,
    canonical_latex,
    extract_boxed,
    extract_last_number,
    math_fast_verdict,
    normalize_number,
    verify_numeric,
)
from mcts_po.verifiers.math_verify_pool import (
    DEFAULT_MATH_TIMEOUT_S,
    configure_math_workers,
    shutdown_math_workers,
    verify_in_worker,
    warm_up_math_workers,
)

logger = logging.getLogger(__name__)


def verify_math(pred: str, gold: str, timeout: float | None = DEFAULT_MATH_TIMEOUT_S) -> bool:
    """MATH equality of a predicted answer and a gold answer (both bare LaTeX, `$...$`,
    or `\\boxed{...}`). Order: canonical string equality, numeric equality, then
    math-verify `verify(gold, pred)` in a worker process limited to `timeout` seconds.
    Returns False on timeout, on any error, and for inputs over `MAX_ANSWER_CHARS`.
    `timeout=None` means the default (5 s): there is no unlimited mode.
    Safe from any thread or process. Never raises."""
    try:
        pred_text, gold_text = answer_text(pred), answer_text(gold)
        if pred_text is None or gold_text is None or not pred_text.strip() or not gold_text.strip():
            return False
        verdict = math_fast_verdict(pred_text, gold_text)
        if verdict is not None:
            return verdict
        return verify_in_worker(gold_text, pred_text, timeout)
    except Exception:
        logger.debug("verify_math failed", exc_info=True)
        return False


VERIFIERS: dict[str, Callable[[str, str], bool]] = {
    "numeric": verify_numeric,
    "math": verify_math,
}


def get_verifier(name: str) -> Callable[[str, str], bool]:
    """The verifier called `name` ("numeric" or "math"): a callable (pred, gold) -> bool."""
    try:
        return VERIFIERS[name]
    except (KeyError, TypeError):
        from mcts_po.io_utils import UserError

        raise UserError(
            f"unknown verifier {name!r}; valid names: {', '.join(sorted(VERIFIERS))}") from None


__all__ = [
    "DEFAULT_MATH_TIMEOUT_S", "MAX_ANSWER_CHARS", "VERIFIERS", "canonical_latex", "configure_math_workers",
    "extract_boxed", "extract_last_number", "get_verifier", "normalize_number", "shutdown_math_workers",
    "verify_math", "verify_numeric", "warm_up_math_workers",
]
