"""Answer verifiers: is a predicted final answer equal to the gold one?

Two verifiers, chosen by name with `get_verifier("numeric" | "math")`:

* `verify_numeric(pred, gold)` — GSM8K-style. Both sides go through `normalize_number`
  and are compared as exact rationals (`fractions.Fraction`); when either side was
  written as a decimal, a relative difference up to 1e-6 also counts as equal.
* `verify_math(pred, gold, timeout=5.0)` — MATH-style LaTeX answers. Fast paths first
  (canonical string equality, then numeric equality via `normalize_number`), then
  math-verify (`parse` + `verify(gold, pred)`, gold first) in a separate worker process.

Helpers: `extract_last_number(text)` (last number in free text), `extract_boxed(text)`
(content of the last top-level `\\boxed{...}` / `\\fbox{...}`), `normalize_number(s)`.

    from mcts_po.verifiers import get_verifier, extract_boxed
    verify = get_verifier("math")
    verify(extract_boxed(model_text), "\\frac{1}{2}")   # -> True / False, never raises

Contract of both verifiers: they return a bool and never raise for any input (non-strings
count as their `str()`, `None` is False); an input longer than `MAX_ANSWER_CHARS`
(10,000 characters) on either side is rejected up front as False. Only
`KeyboardInterrupt`/`SystemExit` pass through.

Why a worker process for math-verify. math-verify's own timeouts use `signal.alarm`,
which only works in the main thread of the main interpreter (elsewhere it raises
`ValueError`), and its `TimeoutException` derives from `BaseException`. sympy can also
spend minutes (or all memory) on a hostile expression, and a thread cannot be killed.
So `verify_math` sends the pair to a persistent worker (`python -c` running
`_worker_main`, started with `subprocess.Popen`, i.e. a fresh interpreter: no fork of a
threaded parent, no re-import of the caller's `__main__`, and it also works inside
daemonic `multiprocessing` workers, which may not use `multiprocessing` children). The
worker calls `parse(..., parsing_timeout=None)` and `verify(..., timeout_seconds=None)`
(signals off) and answers over a pipe. The parent waits at most `timeout` seconds for the
answer (measured from when the request is sent; waiting for a free worker or for a
worker to start is not counted, and both are bounded); on timeout it SIGKILLs the
worker, returns False, and a new worker is started lazily by the next call. Workers get
a 4 GiB address-space limit, so a blow-up becomes a `MemoryError` (False), not a
swapping machine. POSIX only (the parent waits on the pipe with `select`).

Thread safety: a small pool. Each call checks out an idle worker (or starts one, up to
`max_workers`, default `max(4, os.cpu_count())`), so concurrent callers never queue
behind each other's slow inputs unless more than `max_workers` calls are in flight. Pool
size is set with `configure_math_workers(max_workers=...)`; `warm_up_math_workers(n)`
starts workers ahead of time (each takes ~1-2 s to import sympy). Workers are closed at
exit (`atexit`), and a process that forks drops the inherited pool (the parent's
workers stay the parent's).

What `normalize_number` accepts (after stripping whitespace, a trailing full stop, outer
`$...$` / `\\(...\\)` / `\\[...\\]`, `\\boxed{}`/`\\fbox{}`, and one leading `name =`):
integers with or without thousands commas (`1,234`; other comma use is rejected),
decimals (`2.5`, `.5`), signs (`-3`, `+3`, Unicode minus), slash fractions (`3/4`,
`-3/4`), LaTeX fractions (`\\frac{3}{4}`, `\\dfrac`, `\\tfrac`, `\\frac34`, a minus
before or inside), plain mixed numbers (`1 1/2` = 3/2; LaTeX `1\\frac{1}{2}` is NOT
read as mixed), currency (`$12`, `\\$12`), percent (`12%`, `12\\%` = 12, the MATH/GSM8K
convention that the percent sign is decoration), degrees (`30^\\circ`), and trailing
unit words (`18 dollars`, `5 cm`, `5\\text{ cm}`, `5 \\mbox{inches}`). Anything else
(`5\\sqrt{2}`, `(1, 2)`, `1e3`, `x+1`) gives None.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 10_000
DEFAULT_MATH_TIMEOUT_S = 5.0
DECIMAL_RELATIVE_TOLERANCE = Fraction(1, 10**6)
WORKER_START_TIMEOUT_S = 120.0
WORKER_MEMORY_LIMIT_BYTES = 4 << 30

# ----------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------

# A number: optional sign (not when glued to a preceding word/digit, so "5-3" gives 3),
# optional currency, thousands-grouped or plain digits, optional decimals, optional
# "/denominator", optional percent.
_NUMBER_IN_TEXT = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212])?\s?\\?\$?\s?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
    r"(?![\d])"
)


def extract_last_number(text: str) -> str | None:
    """The last number in `text` as a clean string ("1,234" -> "1234", "$12" -> "12",
    "-3", "2.5", "3/4", "12%" -> "12"), or None when there is none.

    A minus counts as a sign only when not glued to a preceding word or digit.
    """
    if not isinstance(text, str) or not text:
        return None
    last = None
    for last in _NUMBER_IN_TEXT.finditer(text):
        pass
    if last is None:
        return None
    sign = "-" if last.group("sign") in ("-", "\u2212") else ""
    number = last.group("num").replace(",", "")
    if last.group("den"):
        number += "/" + last.group("den")
    return sign + number


_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_group(text: str, open_index: int) -> int | None:
    """Index just past the `}` matching the `{` at `open_index`, or None when unbalanced.
    Escaped braces (`\\{`, `\\}`) do not count."""
    depth = 0
    index = open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def _box_at(text: str, match: re.Match) -> tuple[str | None, int]:
    """(content, end index) of the box whose command `match` found."""
    index = match.end()
    while index < len(text) and text[index] == " ":
        index += 1
    if index < len(text) and text[index] == "{":
        end = _balanced_group(text, index)
        if end is None:
            return None, len(text)
        return text[index + 1:end - 1], end
    # `\boxed 5` form: up to the next `$` or whitespace.
    short = re.match(r"[^\s$]+", text[index:])
    if short is None:
        return None, index
    return short.group(0), index + short.end()


def extract_boxed(text: str) -> str | None:
    """Content of the last top-level `\\boxed{...}` or `\\fbox{...}` in `text` (nested
    braces kept, e.g. `\\boxed{\\frac{1}{2}}` -> `\\frac{1}{2}`), stripped; None when there
    is no box or the last one is not closed (a truncated answer)."""
    if not isinstance(text, str):
        return None
    content: str | None = None
    position = 0
    while True:
        match = _BOX_COMMAND.search(text, position)
        if match is None:
            return content.strip() if content is not None else None
        content, position = _box_at(text, match)
        if content is None:
            return None


# ----------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------

_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SPACING_COMMANDS = re.compile(r"\\[,;:! ]|\\q?quad(?![A-Za-z])|~")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_LEADING_ASSIGNMENT = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
# Units: a trailing `\text{..}`-style group (with an optional `^2`), or plain words of two
# or more letters after a space ("18 dollars"). A glued single letter ("5r") is not a unit.
# Both are only ever run on the last `_UNIT_TAIL_CHARS` characters (`_strip_trailing`) and
# written without ambiguous nested repeats, so their cost stays linear (no ReDoS).
_TRAILING_TEXT_UNIT = re.compile(
    r"(?<=\S)\s*\\(?:text|textbf|textrm|mathrm|mbox|textnormal)\s*\{[^{}]*\}"
    r"(?:\s*\^\s*\{?\d\}?)?\s*$")
_TRAILING_UNIT_WORDS = re.compile(
    r"(?<=[\d.}])\s+[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*\s*$")
_UNIT_TAIL_CHARS = 80
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\u00b0")
_PLAIN_NUMBER = re.compile(
    r"^(?P<sign>[-+])?(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?:\.(?P<frac>\d+))?$"
)
_SLASH_FRACTION = re.compile(r"^(?P<sign>[-+])?(?P<num>\d+(?:\.\d+)?)/(?P<den>\d+(?:\.\d+)?)$")
_MIXED_NUMBER = re.compile(r"^(?P<sign>[-+])?(?P<whole>\d+) +(?P<num>\d+)/(?P<den>\d+)$")
_LATEX_FRACTION = re.compile(
    r"^(?P<sign>[-+])?\\[dt]?frac\s*(?:\{\s*(?P<num>[-+]?[\d.,]+)\s*\}|(?P<num1>\d))"
    r"\s*(?:\{\s*(?P<den>[-+]?[\d.,]+)\s*\}|(?P<den1>\d))$"
)


def _strip_trailing(pattern: re.Pattern, text: str) -> str:
    """Remove a match of `pattern` (anchored at the end) found within the last
    `_UNIT_TAIL_CHARS` characters."""
    offset = max(0, len(text) - _UNIT_TAIL_CHARS)
    match = pattern.search(text, offset)
    return text[:match.start()] if match is not None else text


def _strip_outer(text: str) -> str:
    """Remove whitespace, a final full stop, math delimiters and a wrapping box, repeatedly."""
    previous = None
    while text != previous:
        previous = text
        text = text.strip()
        if text.endswith("."):  # a sentence's full stop: "18." -> "18"
            text = text[:-1].rstrip()
        for opener, closer in _MATH_DELIMITERS:
            if len(text) >= len(opener) + len(closer) and text.startswith(opener) \
                    and text.endswith(closer) and not text.startswith("\\$"):
                text = text[len(opener):-len(closer)]
                break
        box = _BOX_COMMAND.match(text)
        if box is not None:
            content, end = _box_at(text, box)
            if content is not None and end == len(text):
                text = content
    return text


def _parse_decimal(text: str) -> tuple[Fraction, bool] | None:
    """(value, was_decimal) for a plain integer/decimal with optional thousands commas."""
    match = _PLAIN_NUMBER.match(text)
    if match is None or (match.group("int") is None and match.group("frac") is None):
        return None
    value = Fraction(text.replace(",", "").lstrip("+"))
    return value, match.group("frac") is not None


def _parse_fraction_part(text: str) -> Fraction | None:
    parsed = _parse_decimal(text)
    return parsed[0] if parsed is not None else None


def _normalize_number_detail(text: str) -> tuple[Fraction, bool] | None:
    """`normalize_number` plus whether a decimal point was involved (for the tolerance)."""
    if not isinstance(text, str) or not text or len(text) > MAX_ANSWER_CHARS:
        return None
    text = text.replace("\u2212", "-").replace("\u2013", "-")
    text = _strip_outer(text)
    text = _LEADING_ASSIGNMENT.sub("", text, count=1)
    text = _strip_outer(text)
    text = _SPACING_COMMANDS.sub(" ", text)
    text = text.replace("\\left", "").replace("\\right", "")
    text = _DEGREES.sub("", text)
    text = text.replace("\\%", "").replace("%", "")
    previous = None
    while previous != text:
        previous, text = text, _strip_trailing(_TRAILING_TEXT_UNIT, text)
    text = _TEXT_WRAPPER.sub(lambda match: " " + match.group(1), text)
    text = text.replace("\\$", "$")
    # Currency: a `$` right after an optional sign, e.g. "$12", "-$5".
    text = re.sub(r"^([-+]?)\s*\$\s*", r"\1", text.strip())
    text = _strip_trailing(_TRAILING_UNIT_WORDS, text).strip()
    text = _strip_outer(text)
    text = re.sub(r"^([-+])\s+", r"\1", text)
    if not text:
        return None

    parsed = _parse_decimal(text)
    if parsed is not None:
        return parsed
    match = _SLASH_FRACTION.match(text)
    if match is not None:
        numerator, denominator = Fraction(match.group("num")), Fraction(match.group("den"))
        if denominator == 0:
            return None
        value = numerator / denominator
        return (-value if match.group("sign") == "-" else value), "." in text
    match = _MIXED_NUMBER.match(text)
    if match is not None:
        denominator = int(match.group("den"))
        if denominator == 0:
            return None
        value = int(match.group("whole")) + Fraction(int(match.group("num")), denominator)
        return (-value if match.group("sign") == "-" else value), False
    match = _LATEX_FRACTION.match(text)
    if match is not None:
        numerator = _parse_fraction_part(match.group("num") or match.group("num1"))
        denominator = _parse_fraction_part(match.group("den") or match.group("den1"))
        if numerator is None or denominator is None or denominator == 0:
            return None
        value = numerator / denominator
        return (-value if match.group("sign") == "-" else value), "." in text
    return None


def normalize_number(s: str) -> Fraction | None:
    """Parse an answer string into an exact `Fraction`, tolerantly; None when it is not a
    single number. See the module docstring for the accepted forms.

    >>> normalize_number("$1,234.50")
    Fraction(2469, 2)
    >>> normalize_number("x = \\\\frac{3}{4}")
    Fraction(3, 4)
    """
    try:
        detail = _normalize_number_detail(s)
    except (ValueError, ZeroDivisionError, OverflowError):  # e.g. over 4,300 digits
        return None
    return detail[0] if detail is not None else None


def _safe_number_detail(text: str) -> tuple[Fraction, bool] | None:
    try:
        return _normalize_number_detail(text)
    except (ValueError, ZeroDivisionError, OverflowError):  # e.g. over 4,300 digits
        return None


def _numbers_equal(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool]) -> bool:
    (pred_value, pred_decimal), (gold_value, gold_decimal) = pred, gold
    if pred_value == gold_value:
        return True
    if not (pred_decimal or gold_decimal):
        return False
    scale = max(abs(pred_value), abs(gold_value))
    return abs(pred_value - gold_value) <= DECIMAL_RELATIVE_TOLERANCE * scale


def _as_answer_text(value: object) -> str | None:
    """Inputs as text: str as is, numbers via str(), None stays None; too long -> None."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # a hostile __str__
            return None
    if len(value) > MAX_ANSWER_CHARS:
        return None
    return value


def verify_numeric(pred: str, gold: str) -> bool:
    """GSM8K equality: True when both sides normalise to the same number (exact rationals;
    relative tolerance 1e-6 when a decimal point is involved). Never raises."""
    try:
        pred_text, gold_text = _as_answer_text(pred), _as_answer_text(gold)
        if pred_text is None or gold_text is None:
            return False
        pred_number = _safe_number_detail(pred_text)
        gold_number = _safe_number_detail(gold_text)
        if pred_number is None or gold_number is None:
            return False
        return _numbers_equal(pred_number, gold_number)
    except Exception:  # pragma: no cover - defensive: the contract is "never raises"
        logger.debug("verify_numeric failed", exc_info=True)
        return False


# ----------------------------------------------------------------------------------------
# MATH answers
# ----------------------------------------------------------------------------------------

_FRACTION_VARIANTS = re.compile(r"\\[dt]frac(?![A-Za-z])")
_NUMBER_LITERAL_CHARS = re.compile(r"^[-+]?[\d.,/{}]+$")
# A number written in another base, e.g. `52_8`, `4210_{5}`, `A3_{16}`.
_BASE_NUMBER = re.compile(r"^(?P<digits>[0-9A-Za-z]+)_\{?(?P<base>\d+)\}?$")


def _is_number_literal(canonical: str) -> bool:
    """Digits, sign, point, commas, slash and `\\frac{..}{..}` only (canonical form)."""
    return bool(_NUMBER_LITERAL_CHARS.match(canonical.replace("\\frac", "", 1)))


def _compare_base_numbers(pred_canonical: str, gold_canonical: str) -> bool | None:
    """Gold in base notation (`52_8`): equal iff the digits match and the prediction names
    the same base or none. math-verify drops the subscript (it accepts `52_9`), so this is
    decided here. None when the gold is not a base-notation number."""
    gold_match = _BASE_NUMBER.match(gold_canonical)
    if gold_match is None:
        return None
    pred_match = _BASE_NUMBER.match(pred_canonical)
    if pred_match is None:
        return pred_canonical.upper() == gold_match.group("digits").upper()
    return (pred_match.group("digits").upper() == gold_match.group("digits").upper()
            and int(pred_match.group("base")) == int(gold_match.group("base")))


def canonical_latex(text: str) -> str:
    """A conservative canonical form for string comparison: outer delimiters/box removed,
    `\\dfrac`/`\\tfrac` -> `\\frac`, `\\left`/`\\right` and spacing commands dropped,
    `\\text{..}` unwrapped, all whitespace removed, no final full stop. Only used to
    accept equal strings, never to reject."""
    text = _strip_outer(text)
    text = _FRACTION_VARIANTS.sub(r"\\frac", text)
    text = re.sub(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])", "", text)
    text = _SPACING_COMMANDS.sub("", text)
    text = _TEXT_WRAPPER.sub(lambda match: match.group(1), text)
    text = re.sub(r"\s+", "", text)
    return _strip_outer(text)


def verify_math(pred: str, gold: str, timeout: float | None = DEFAULT_MATH_TIMEOUT_S) -> bool:
    """MATH equality of a predicted answer and a gold answer (both bare LaTeX, `$...$`,
    or `\\boxed{...}`). Order: canonical string equality, numeric equality, then
    math-verify `verify(gold, pred)` in a worker process limited to `timeout` seconds.
    Returns False on timeout, on any error, and for inputs over `MAX_ANSWER_CHARS`.
    `timeout=None` means the default (5 s): there is no unlimited mode.
    Safe from any thread or process. Never raises."""
    try:
        pred_text, gold_text = _as_answer_text(pred), _as_answer_text(gold)
        if pred_text is None or gold_text is None or not pred_text.strip() or not gold_text.strip():
            return False
        pred_canonical, gold_canonical = canonical_latex(pred_text), canonical_latex(gold_text)
        if pred_canonical and pred_canonical == gold_canonical:
            return True
        pred_number = _safe_number_detail(pred_text)
        gold_number = _safe_number_detail(gold_text)
        if pred_number is not None and gold_number is not None:
            if _numbers_equal(pred_number, gold_number):
                return True
            # Two plain number literals that differ are different: decide here, because
            # math-verify rounds to 6 decimals (it would accept .0000673 for .0000672).
            if _is_number_literal(pred_canonical) and _is_number_literal(gold_canonical):
                return False
        base_verdict = _compare_base_numbers(pred_canonical, gold_canonical)
        if base_verdict is not None:
            return base_verdict
        return _math_pool().verify(gold_text, pred_text, timeout)
    except Exception:
        logger.debug("verify_math failed", exc_info=True)
        return False


# ----------------------------------------------------------------------------------------
# The math-verify worker (child side)
# ----------------------------------------------------------------------------------------

_LATEX_DELIMITED = re.compile(r"\\boxed|\\fbox|(?<!\\)\$|\\\(|\\\[")


def _parse_for_math_verify(parse: Callable, text: str) -> list:
    """math-verify needs delimiters: try the text inside `\\boxed{}` (bare LaTeX such as
    MATH-500's `answer`) and the text as written, in the order its look suggests."""
    boxed = "\\boxed{" + text + "}"
    candidates = [text, boxed] if _LATEX_DELIMITED.search(text) else [boxed, text]
    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def _worker_compare(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = _parse_for_math_verify(parse, gold)
    pred_parsed = _parse_for_math_verify(parse, pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _worker_main(memory_limit_bytes: int | None = WORKER_MEMORY_LIMIT_BYTES) -> None:
    """Child process loop: one JSON request per stdin line, one JSON reply per line on the
    original stdout (fd 1 is pointed at stderr so stray prints cannot corrupt replies)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if memory_limit_bytes:
        try:
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                memory_limit_bytes = min(memory_limit_bytes, hard)
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, hard))
        except (ImportError, ValueError, OSError):
            pass
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    replies = os.fdopen(reply_fd, "w", encoding="utf-8", buffering=1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    try:
        import math_verify  # noqa: F401  (import now, so requests only pay for the work)
        from math_verify.errors import TimeoutException
    except BaseException as error:  # noqa: BLE001 - report and exit
        replies.write(json.dumps({"ready": False, "error": repr(error)}) + "\n")
        return
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            equal, error = _worker_compare(request["gold"], request["pred"]), None
        except (Exception, TimeoutException) as exc:  # noqa: BLE001
            equal, error = False, type(exc).__name__
        replies.write(json.dumps({"equal": equal, "error": error}) + "\n")


# ----------------------------------------------------------------------------------------
# The math-verify worker pool (parent side)
# ----------------------------------------------------------------------------------------

class _WorkerGone(Exception):
    """The worker timed out, died or answered nonsense; it must be discarded."""


class _MathVerifyWorker:
    """One child interpreter running `_worker_main`, talked to over pipes."""

    def __init__(self) -> None:
        package_parent = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONSAFEPATH"] = "1"  # 3.11+: no cwd on sys.path (a stray ./sympy.py)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        code = ("from mcts_po.verifiers import _worker_main; "
                f"_worker_main({WORKER_MEMORY_LIMIT_BYTES!r})")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, close_fds=True)
        self._buffer = b""

    def _read_reply(self, deadline: float) -> dict:
        stdout_fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerGone("timeout")
            ready, _, _ = select.select([stdout_fd], [], [], remaining)
            if not ready:
                raise _WorkerGone("timeout")
            chunk = os.read(stdout_fd, 65536)
            if not chunk:
                raise _WorkerGone(f"worker exited (code {self.process.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as error:
            raise _WorkerGone(f"bad reply {line[:80]!r}") from error

    def wait_ready(self, timeout: float) -> None:
        reply = self._read_reply(time.monotonic() + timeout)
        if not reply.get("ready"):
            raise _WorkerGone(f"worker failed to start: {reply.get('error')}")

    def compare(self, gold: str, pred: str, timeout: float) -> bool:
        request = json.dumps({"gold": gold, "pred": pred}) + "\n"
        try:
            self.process.stdin.write(request.encode("utf-8", "surrogatepass"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as error:
            raise _WorkerGone(f"cannot write to worker: {error}") from error
        reply = self._read_reply(time.monotonic() + timeout)
        return reply.get("equal") is True

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.close_pipes()

    def close(self) -> None:
        """Polite shutdown: EOF on stdin ends the loop; kill if it lingers."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=2)
        except Exception:  # noqa: BLE001
            self.kill()
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except Exception:  # noqa: BLE001
                pass


class MathVerifyPool:
    """Idle workers plus a count of live ones; callers check a worker out per request."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or max(4, os.cpu_count() or 1)
        self._condition = threading.Condition()
        self._idle: list[_MathVerifyWorker] = []
        self._all: set[_MathVerifyWorker] = set()
        self._starting = 0
        self._closed = False
        self.timeouts = 0  # requests cut by the timeout (workers killed)

    def _checkout(self) -> _MathVerifyWorker:
        with self._condition:
            while True:
                if self._closed:
                    raise _WorkerGone("pool closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._starting < self.max_workers:
                    self._starting += 1
                    break
                self._condition.wait()
        worker = None
        try:
            worker = _MathVerifyWorker()
            worker.wait_ready(WORKER_START_TIMEOUT_S)
        except BaseException:
            if worker is not None:
                worker.kill()
            with self._condition:
                self._starting -= 1
                self._condition.notify()
            raise
        with self._condition:
            self._starting -= 1
            self._all.add(worker)
        return worker

    def _checkin(self, worker: _MathVerifyWorker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._condition:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
            self._condition.notify()
        if healthy and self._closed:
            worker.close()

    def verify(self, gold: str, pred: str, timeout: float | None) -> bool:
        """math-verify `verify(gold, pred)` in a worker; False on timeout/crash/error."""
        try:
            worker = self._checkout()
        except (_WorkerGone, OSError) as error:
            logger.warning("math-verify worker unavailable: %s", error)
            return False
        healthy = False
        try:
            seconds = DEFAULT_MATH_TIMEOUT_S if timeout is None else max(float(timeout), 0.0)
            result = worker.compare(gold, pred, seconds)
            healthy = True
            return result
        except _WorkerGone as error:
            if str(error) == "timeout":
                self.timeouts += 1
            logger.debug("math-verify worker discarded: %s", error)
            return False
        finally:
            self._checkin(worker, healthy)

    def warm_up(self, count: int) -> int:
        """Start workers until `count` (capped at max_workers) are alive; returns how many."""
        started = []
        try:
            for _ in range(min(count, self.max_workers)):
                started.append(self._checkout())  # holding them forces new ones to start
        finally:
            for worker in started:
                self._checkin(worker, True)
        with self._condition:
            return len(self._all)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._all.difference_update(idle)
        for worker in idle:
            worker.close()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's workers without touching the processes."""
        for worker in list(self._all):
            worker.close_pipes()
        self._all.clear()
        self._idle.clear()


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()
_POOL_MAX_WORKERS: int | None = None


def _math_pool() -> MathVerifyPool:
    global _POOL
    pool = _POOL
    if pool is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = MathVerifyPool(_POOL_MAX_WORKERS)
            pool = _POOL
    return pool


def configure_math_workers(max_workers: int) -> None:
    """Set the most math-verify worker processes alive at once (closes the current pool)."""
    global _POOL, _POOL_MAX_WORKERS
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    with _POOL_LOCK:
        _POOL_MAX_WORKERS = max_workers
        old, _POOL = _POOL, None
    if old is not None:
        old.close()


def warm_up_math_workers(count: int = 1) -> int:
    """Start `count` math-verify workers now (each imports sympy, ~1-2 s) so the first
    calls do not pay for it. Returns the number of live workers."""
    return _math_pool().warm_up(count)


def shutdown_math_workers() -> None:
    """Stop all math-verify workers (also done at exit). A later call starts new ones."""
    global _POOL
    with _POOL_LOCK:
        old, _POOL = _POOL, None
    if old is not None:
        old.close()


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    if _POOL is not None:
        _POOL.forget_after_fork()
    _POOL = None


atexit.register(shutdown_math_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------

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
