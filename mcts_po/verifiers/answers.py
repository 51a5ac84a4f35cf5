"""Answer text: extraction, number normalisation and the comparisons that need no process.

Pure Python (regular expressions and `fractions`): no subprocess, no sympy, no math-verify.
`mcts_po.verifiers.verify_math` uses the fast checks here before it hands a pair to the
math-verify worker pool (`mcts_po.verifiers.math_verify_pool`).

* `extract_last_number(text)` — the last number in free text (GSM8K answers);
* `extract_boxed(text)` — content of the last top-level `\\boxed{...}` / `\\fbox{...}`;
* `normalize_number(s)` — an answer string as an exact `Fraction`, or None;
* `verify_numeric(pred, gold)` — GSM8K equality: both sides through `normalize_number`,
  compared as exact rationals; when either side was written as a decimal, a relative
  difference up to 1e-6 also counts as equal. Returns a bool, never raises;
* `canonical_latex(text)` — a conservative canonical form for string comparison;
* `math_fast_verdict(pred, gold)` — the MATH checks that need no math-verify (canonical string
  equality, numeric equality, differing number literals, base-notation numbers): True or
  False when they decide, None when math-verify must.

    from mcts_po.verifiers.answers import extract_last_number, verify_numeric
    verify_numeric(extract_last_number("so she pays $1,234."), "1234")   # -> True

Inputs longer than `MAX_ANSWER_CHARS` (10,000 characters) are rejected (None / False).

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

import logging
import re
from fractions import Fraction

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 10_000
DECIMAL_RELATIVE_TOLERANCE = Fraction(1, 10**6)

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

# Inline and display math delimiters, longest first (also used by mcts_po.tasks.competition_math).
MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
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
        for opener, closer in MATH_DELIMITERS:
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


def answer_text(value: object) -> str | None:
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
        pred_text, gold_text = answer_text(pred), answer_text(gold)
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


def math_fast_verdict(pred_text: str, gold_text: str) -> bool | None:
    """The MATH comparison of two answer texts as far as it needs no math-verify: True when
    the canonical strings or the numbers are equal, False when both are plain number
    literals that differ (math-verify rounds to 6 decimals: it would accept .0000673 for
    .0000672) or when a base-notation gold (`52_8`) is not matched; None when math-verify
    must decide. May raise on hostile input: `verify_math` catches everything."""
    pred_canonical, gold_canonical = canonical_latex(pred_text), canonical_latex(gold_text)
    if pred_canonical and pred_canonical == gold_canonical:
        return True
    pred_number = _safe_number_detail(pred_text)
    gold_number = _safe_number_detail(gold_text)
    if pred_number is not None and gold_number is not None:
        if _numbers_equal(pred_number, gold_number):
            return True
        if _is_number_literal(pred_canonical) and _is_number_literal(gold_canonical):
            return False
    return _compare_base_numbers(pred_canonical, gold_canonical)
