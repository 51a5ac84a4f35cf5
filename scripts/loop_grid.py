"""Loop benchmark over seeds: combine the per-seed reports of scripts/bench_loop.py into one table.

Reads benchmarks/loop_grid/seed*.json (each written by `bench_loop.py --report-only --report
benchmarks/loop_grid/seedN.md` from a finished or partial run) and writes
benchmarks/loop_grid/summary.md and summary.json: per method, each seed's held-out greedy accuracy
of its last policy with its Wilson interval, the mean over seeds with a 95 % Student-t interval,
the mean gain over policy 0, and paired exact McNemar tests against step-dpo (the tree baseline),
rft (the flat baseline at the same generated tokens) and, for an ablation, the method it changes:
the paired rows each seed's report holds (bench_loop.py pairs them), counts summed over seeds. No model runs here; it takes a second.

    .venv/bin/python scripts/loop_grid.py              # -> runs/loop_grid/summary.md (+ .json)
    .venv/bin/python scripts/loop_grid.py --publish    # -> benchmarks/loop_grid/summary.md (committed)
    .venv/bin/python scripts/loop_grid.py --grid DIR --out OTHER/summary.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.comparisons import mcnemar_exact, mean_interval  # noqa: E402
from mcts_po.evaluation import wilson_interval  # noqa: E402

GRID = REPO / "benchmarks" / "loop_grid"


def load_seeds(grid: Path) -> dict[int, dict[str, Any]]:
    """{seed: report json} for every seedN.json in `grid`, in seed order."""
    seeds = {}
    for path in grid.glob("seed*.json"):
        match = re.fullmatch(r"seed(\d+)\.json", path.name)
        if match:
            seeds[int(match.group(1))] = json.loads(path.read_text(encoding="utf-8"))
    if not seeds:
        raise SystemExit(f"loop_grid: no seedN.json in {grid}")
    return dict(sorted(seeds.items()))


def final_policy(metrics: dict[str, Any], rounds: int) -> dict[str, Any] | None:
    """The policy trained in the last round (policy `rounds`), or None if that round is not evaluated."""
    return next((p for p in metrics["policies"] if p["policy"] == rounds), None)


def summarize(seeds: dict[int, dict[str, Any]], rounds: int = 2) -> dict[str, Any]:
    """Per method: each seed's final policy, mean accuracy and gain over seeds; pooled paired tests."""
    methods = []
    for report in seeds.values():
        methods += [m for m in report["results"] if m not in methods]
    table = {}
    for method in methods:
        per_seed, gains = {}, []
        for seed, report in seeds.items():
            metrics = report["results"].get(method)
            policy = final_policy(metrics, rounds) if metrics else None
            if policy is None:
                continue
            baseline = next((p for p in metrics["policies"] if p["policy"] == 0), None)
            per_seed[seed] = {"correct": policy["correct"], "problems": policy["problems"],
                              "accuracy": policy["correct"] / policy["problems"],
                              "ci95": list(wilson_interval(policy["correct"], policy["problems"]))}
            if metrics.get("from_earlier_report"):
                per_seed[seed]["earlier_report"] = metrics["from_earlier_report"]
            if baseline is not None:
                gains.append(policy["correct"] / policy["problems"] - baseline["correct"] / baseline["problems"])
        accuracies = [entry["accuracy"] for entry in per_seed.values()]
        table[method] = {"seeds": per_seed,
                         "mean_accuracy": list(mean_interval(accuracies)) if accuracies else None,
                         "mean_gain": list(mean_interval(gains)) if gains else None}
    return {"rounds": rounds, "seeds": list(seeds), "methods": table, "paired": pooled_paired(seeds, rounds)}


def pooled_paired(seeds: dict[int, dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """The seeds' paired rows of the final policies (each report's `paired`, written by
    scripts/bench_loop.py), discordant counts summed per (method, reference) over the seeds."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for seed, report in seeds.items():
        for row in report.get("paired") or []:
            if row["policy"] != rounds:
                continue
            total = totals.setdefault((row["method"], row["reference"]), {
                "method": row["method"], "reference": row["reference"], "seeds": [],
                "a_only": 0, "b_only": 0, "both": 0, "neither": 0, "problems": 0})
            for key in ("a_only", "b_only", "both", "neither", "problems"):
                total[key] += row[key]
            total["seeds"].append(seed)
    return [{**t, "difference": (t["a_only"] - t["b_only"]) / t["problems"],
             "mcnemar_p": mcnemar_exact(t["a_only"], t["b_only"])} for t in totals.values()]


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def markdown(summary: dict[str, Any], grid: Path) -> str:
    seeds = summary["seeds"]
    lines = ["# Loop benchmark over seeds (SmolLM2-135M, arithmetic, two rounds on CPU)", "",
             f"Written by `scripts/loop_grid.py` from {', '.join(f'`seed{s}.json`' for s in seeds)} in "
             f"`{grid.relative_to(REPO) if grid.is_relative_to(REPO) else grid}` (each seed's report has its command, "
             "pieces and per-phase times). The seed moves every method to fresh training problems and changes the "
             "search, sampling and training order; the 300 held-out problems are the same for all.", "",
             f"## Held-out greedy accuracy of policy {summary['rounds']} (after {summary['rounds']} rounds)", "",
             "Per seed: correct/300, % and the 95 % Wilson interval. Mean over seeds: 95 % Student-t interval "
             "(n − 1 degrees of freedom: wide with two or three seeds; the paired tests below are the sharper comparison). Gain: over policy 0 of the same seed.", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | seeds | mean % [95 % t] | mean gain, pts [95 % t] |",
             "|---|" + "---|" * len(seeds) + "---|---|---|"]
    for method, row in summary["methods"].items():
        cells = []
        for seed in seeds:
            entry = row["seeds"].get(seed)
            cells.append("not run" if entry is None else
                         f"{entry['correct']}/{entry['problems']} = {percent(entry['accuracy'])} "
                         f"[{percent(entry['ci95'][0])}, {percent(entry['ci95'][1])}]" + (" †" if entry.get("earlier_report") else ""))

        def interval(values):
            if values is None:
                return "—"
            mean, low, high = values
            return percent(mean) + ("" if low is None else f" [{percent(low)}, {percent(high)}]")

        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(row['seeds'])} | {interval(row['mean_accuracy'])} | "
                     f"{interval(row['mean_gain'])} |")
    earlier = sorted({(seed, entry["earlier_report"]) for row in summary["methods"].values()
                      for seed, entry in row["seeds"].items() if entry.get("earlier_report")})
    if earlier:
        lines += ["", "† From an earlier run of that seed whose work folder is gone "
                  f"({', '.join(f'seed {seed}: `{name}`' for seed, name in earlier)}), at an older commit; the seed's "
                  "other arms are a later rerun, with its own step-dpo round-0 trees and flat budgets. The seed's report "
                  "says, for the arms run in both, how far the rerun moved them (its section \"Arms from an earlier run "
                  "of this seed\"). A paired test compares two policies on the same held-out problems whichever run trained "
                  "them; a † arm enters one only where its earlier report kept per-problem results."]
    if summary["paired"]:
        lines += ["", "## Paired tests, summed over seeds", "",
                  "Final policies on the same held-out problems; discordant problems summed over the seeds listed "
                  "(only seeds whose report holds per-problem results), exact two-sided McNemar p "
                  "(mcts_po/comparisons.py).", "",
                  "| method | vs | seeds | method only | other only | difference, pts | McNemar p |",
                  "|---|---|---|---|---|---|---|"]
        for r in summary["paired"]:
            lines.append(f"| {r['method']} | {r['reference']} | {', '.join(map(str, r['seeds']))} | {r['a_only']} | "
                         f"{r['b_only']} | {100 * r['difference']:+.1f} | {r['mcnemar_p']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(GRID), help="folder of seedN.json reports")
    parser.add_argument("--out", help="markdown to write (the .json goes beside it; default runs/loop_grid/summary.md)")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/loop_grid/summary.md (the committed one)")
    parser.add_argument("--rounds", type=int, default=2, help="the policy compared is the one trained in this round")
    args = parser.parse_args(argv)
    grid = Path(args.grid).resolve()
    out = Path(args.out) if args.out else (GRID if args.publish else REPO / "runs" / "loop_grid") / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(load_seeds(grid), args.rounds)
    from mcts_po.io_utils import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), summary)
    atomic_write_text(out, markdown(summary, grid))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
