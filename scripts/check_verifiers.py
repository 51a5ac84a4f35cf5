"""Real-data acceptance checks for `mcts_po.verifiers`, printing the figures.

Runs, on the local copies of GSM8K test and MATH-500 (never copied into the repo):
  1. GSM8K: every gold answer (last number after `####`) verifies against itself and
     against comma / `$` / unit / `.00` perturbations, and is rejected against wrong values.
  2. MATH-500: the last `\\boxed{}` of each `solution` against the `answer` field (hits,
     misses listed, time), plus wrong perturbations of each answer (must all be rejected).
  3. Speed: verify_math calls/s on MATH-500 (all paths), and the math-verify worker path
     alone (fast paths bypassed).
  4. Pathological inputs: wall time until False.

    PYTHONPATH=. .venv/bin/python scripts/check_verifiers.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import sys
import time
from pathlib import Path

from mcts_po.verifiers import math_verify_pool
from mcts_po.verifiers import (extract_boxed, extract_last_number, normalize_number,
                               verify_math, verify_numeric)


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def gsm8k_gold(answer_text: str) -> str | None:
    return extract_last_number(answer_text.split("####")[-1])


def equivalent_forms(gold: str) -> list[str]:
    """Same value written the ways a model or a human might write it."""
    value = normalize_number(gold)
    forms = [gold, f"${gold}", f"{gold} dollars", f"{gold}."]
    if value is not None and value.denominator == 1:
        integer = int(value)
        forms += [f"{integer:,}", f"${integer:,}", f"${integer:,}.00", f"{integer}.00",
                  f"\\${integer:,}", f"{integer} cm", f"x = {integer}", f"\\boxed{{{integer}}}"]
    return forms


def wrong_forms(gold: str) -> list[str]:
    value = normalize_number(gold)
    if value is None:
        return []
    wrong = [value + 1, value - 1, value * 2 if value else 7, value + 10]
    if value:
        wrong.append(-value)
    return [str(w) if w.denominator != 1 else str(int(w)) for w in wrong]


def digit_off_by_one(latex: str) -> str | None:
    """Bump the last digit of a LaTeX answer (9 -> 8, else +1) before any `\\text`/`\\mbox`
    unit (units are ignored by design): a near-miss wrong answer."""
    unit = re.search(r"\\(?:text|mbox)", latex)
    head = latex[:unit.start()] if unit else latex
    digits = [match for match in re.finditer(r"\d", head)]
    if not digits:
        return None
    last = digits[-1]
    digit = int(last.group(0))
    replacement = str(digit - 1 if digit == 9 else digit + 1)
    return latex[:last.start()] + replacement + latex[last.end():]


def check_gsm8k(data: Path) -> None:
    rows = read_rows(data / "gsm8k" / "test.jsonl")
    start = time.perf_counter()
    missing, self_fail, form_fail, wrong_pass, forms_checked, wrong_checked = 0, 0, [], [], 0, 0
    for row in rows:
        gold = gsm8k_gold(row["answer"])
        if gold is None:
            missing += 1
            continue
        if not (verify_numeric(gold, gold) and verify_math(gold, gold)):
            self_fail += 1
        for form in equivalent_forms(gold):
            forms_checked += 1
            if not verify_numeric(form, gold):
                form_fail.append((gold, form))
        for wrong in wrong_forms(gold):
            wrong_checked += 1
            if verify_numeric(wrong, gold):
                wrong_pass.append((gold, wrong))
    elapsed = time.perf_counter() - start
    print(f"GSM8K test: {len(rows)} rows, gold extracted {len(rows) - missing}, "
          f"self-verify failures {self_fail}, equivalent forms {forms_checked} "
          f"(failures {len(form_fail)}), wrong values {wrong_checked} "
          f"(accepted {len(wrong_pass)}), {elapsed:.2f} s")
    for gold, form in form_fail[:10]:
        print(f"  form miss: gold {gold!r} form {form!r}")
    for gold, wrong in wrong_pass[:10]:
        print(f"  WRONG ACCEPTED: gold {gold!r} pred {wrong!r}")


def check_math500(data: Path) -> list[tuple[str, str]]:
    rows = read_rows(data / "math" / "math500.jsonl")
    math_verify_pool.warm_up_math_workers(1)
    start = time.perf_counter()
    misses = []
    pairs = []
    for index, row in enumerate(rows):
        boxed = extract_boxed(row["solution"])
        pairs.append((boxed or "", row["answer"]))
        if boxed is None or not verify_math(boxed, row["answer"]):
            misses.append((index, boxed, row["answer"]))
    elapsed = time.perf_counter() - start
    print(f"MATH-500: boxed(solution) vs answer: {len(rows) - len(misses)}/{len(rows)} hits, "
          f"{elapsed:.2f} s ({len(rows) / elapsed:.0f} calls/s incl. fast paths)")
    for index, boxed, answer in misses:
        print(f"  miss #{index}: boxed {boxed!r} vs answer {answer!r}")

    start = time.perf_counter()
    wrong_total, wrong_accepted = 0, []
    for _, answer in pairs:
        candidates = wrong_forms(answer)
        bumped = digit_off_by_one(answer)
        if bumped is not None:
            candidates.append(bumped)
        for wrong in candidates:
            wrong_total += 1
            if verify_math(wrong, answer) or (normalize_number(answer) is not None
                                               and verify_numeric(wrong, answer)):
                wrong_accepted.append((answer, wrong))
    elapsed = time.perf_counter() - start
    print(f"MATH-500 wrong perturbations: {wrong_total} checked, {len(wrong_accepted)} accepted, "
          f"{elapsed:.2f} s ({wrong_total / elapsed:.0f} calls/s)")
    for answer, wrong in wrong_accepted[:20]:
        print(f"  accepted: answer {answer!r} pred {wrong!r}")
    return pairs


def check_speed(pairs: list[tuple[str, str]]) -> None:
    pool = math_verify_pool._math_pool()
    start = time.perf_counter()
    hits = sum(pool.verify(gold, pred, 5.0) for pred, gold in pairs)
    elapsed = time.perf_counter() - start
    print(f"math-verify worker path only (1 thread): {len(pairs)} pairs, {hits} equal, "
          f"{elapsed:.2f} s, {len(pairs) / elapsed:.0f} calls/s")
    math_verify_pool.warm_up_math_workers(2)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        hits = sum(executor.map(lambda pair: pool.verify(pair[1], pair[0], 5.0), pairs))
    elapsed = time.perf_counter() - start
    print(f"math-verify worker path only (2 threads, pool): {hits} equal, {elapsed:.2f} s, "
          f"{len(pairs) / elapsed:.0f} calls/s")
    math_verify_pool.configure_math_workers(1)  # the alternative design: one worker behind a lock
    single = math_verify_pool._math_pool()
    single.warm_up(1)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        hits = sum(executor.map(lambda pair: single.verify(pair[1], pair[0], 5.0), pairs))
    elapsed = time.perf_counter() - start
    print(f"math-verify worker path only (2 threads, 1 worker): {hits} equal, {elapsed:.2f} s, "
          f"{len(pairs) / elapsed:.0f} calls/s")
    math_verify_pool.configure_math_workers(max(4, os.cpu_count() or 1))


def check_pathological() -> None:
    cases = {
        "1 MB garbage LaTeX": (("\\frac{\\sqrt{" * 80_000)[:1_000_000], "1"),
        "2000-deep \\frac": ("\\frac{1}{" * 2000 + "1" + "}" * 2000, "1"),
        "900-deep \\frac (under size guard)": ("\\frac{1}{" * 900 + "1" + "}" * 900, "2"),
        "1000000! vs 1000001!": ("1000000!", "1000001!"),
    }
    for name, (pred, gold) in cases.items():
        for timeout in (0.5, 5.0):
            # A timed-out worker is killed and restarted lazily; start it now so the figure
            # is the timeout path alone, not the ~0.4-1.5 s of a fresh worker's imports.
            math_verify_pool.warm_up_math_workers(1)
            start = time.perf_counter()
            result = verify_math(pred, gold, timeout=timeout)
            print(f"pathological {name}, timeout {timeout}: {result} in "
                  f"{time.perf_counter() - start:.2f} s")
    math_verify_pool.shutdown_math_workers()
    start = time.perf_counter()
    result = verify_math("x^2+2x+1", "(x+1)^2")
    print(f"first math-verify call with no live worker (includes its start): {result} in "
          f"{time.perf_counter() - start:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="folder with gsm8k/test.jsonl and math/math500.jsonl")
    args = parser.parse_args(argv)
    if not (args.data / "gsm8k" / "test.jsonl").exists():
        print(f"data not found under {args.data}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    worker_start = time.perf_counter()
    math_verify_pool.warm_up_math_workers(1)
    print(f"first math-verify worker ready in {time.perf_counter() - worker_start:.2f} s")
    check_gsm8k(args.data)
    pairs = check_math500(args.data)
    check_speed(pairs)
    check_pathological()
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
