"""The per-run statistics report of `mcts-po extract`: a dict (stats.json) and its text form.

For each format: rows, rows per 100 trees, how many problems contributed at least one row
(and their share of the problems read), pairs per depth (step formats), a histogram of
Q margins `q_chosen - q_rejected` (pair formats; bins of 0.25 over [0, 2], drawn as text
bars), and how many candidates each selection rule dropped.

    from mcts_po.extract.stats import extraction_stats, format_stats
    stats = extraction_stats(trees, {"step-dpo": rows}, {"step-dpo": counters})
    print(format_stats(stats))
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from mcts_po.search.tree import Tree

MARGIN_BIN_WIDTH = 0.25
MARGIN_BINS = 8  # [0, 0.25), ..., [1.75, 2.0]; Q margins lie in (0, 2]
BAR_WIDTH = 40


def margin_histogram(margins: Sequence[float]) -> list[dict[str, Any]]:
    counts = [0] * MARGIN_BINS
    for margin in margins:
        index = min(int(max(margin, 0.0) / MARGIN_BIN_WIDTH), MARGIN_BINS - 1)
        counts[index] += 1
    return [{"low": i * MARGIN_BIN_WIDTH, "high": (i + 1) * MARGIN_BIN_WIDTH, "count": c} for i, c in enumerate(counts)]


def format_row_stats(rows: Sequence[dict[str, Any]], num_trees: int, problems: set[str],
                     counters: Mapping[str, int] | None) -> dict[str, Any]:
    contributing = {row["problem_id"] for row in rows}
    out: dict[str, Any] = {
        "rows": len(rows),
        "rows_per_100_trees": round(100.0 * len(rows) / num_trees, 2) if num_trees else 0.0,
        "problems_contributing": len(contributing),
        "share_of_problems": round(len(contributing) / len(problems), 4) if problems else 0.0,
    }
    if rows and "depth" in rows[0]:
        depths = Counter(row["depth"] for row in rows)
        out["pairs_per_depth"] = {str(d): depths[d] for d in sorted(depths)}
    if rows and "q_chosen" in rows[0]:
        margins = [row["q_chosen"] - row["q_rejected"] for row in rows]
        out["mean_q_margin"] = round(sum(margins) / len(margins), 4)
        out["q_margin_histogram"] = margin_histogram(margins)
    out["dropped"] = dict(sorted((counters or {}).items()))
    return out


def extraction_stats(trees: Sequence[Tree], rows_by_format: Mapping[str, Sequence[dict[str, Any]]],
                     counters_by_format: Mapping[str, Mapping[str, int]] | None = None,
                     config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    problems = {tree.problem_id for tree in trees}
    counters_by_format = counters_by_format or {}
    return {
        "trees_read": len(trees),
        "problems_read": len(problems),
        "trees_with_correct_answer": sum(1 for t in trees if t.has_correct_terminal()),
        "config": dict(config or {}),
        "formats": {
            name: format_row_stats(rows, len(trees), problems, counters_by_format.get(name))
            for name, rows in rows_by_format.items()
        },
    }


def _bar(count: int, largest: int) -> str:
    if largest <= 0 or count <= 0:
        return ""
    return "#" * max(1, round(BAR_WIDTH * count / largest))


def format_stats(stats: Mapping[str, Any]) -> str:
    lines = [f"trees read: {stats['trees_read']}  problems: {stats['problems_read']}  "
             f"with a correct answer in the tree: {stats['trees_with_correct_answer']}"]
    for name, fmt in stats["formats"].items():
        lines.append("")
        lines.append(f"{name}: {fmt['rows']} rows ({fmt['rows_per_100_trees']} per 100 trees); "
                     f"problems contributing: {fmt['problems_contributing']} "
                     f"({100.0 * fmt['share_of_problems']:.1f}%)")
        if "pairs_per_depth" in fmt:
            per_depth = ", ".join(f"{d}: {n}" for d, n in fmt["pairs_per_depth"].items())
            lines.append(f"  pairs per depth: {per_depth}")
        if "q_margin_histogram" in fmt:
            lines.append(f"  Q margin (mean {fmt['mean_q_margin']}):")
            largest = max(b["count"] for b in fmt["q_margin_histogram"])
            last = len(fmt["q_margin_histogram"]) - 1
            for i, b in enumerate(fmt["q_margin_histogram"]):
                close = "]" if i == last else ")"
                lines.append(f"    [{b['low']:.2f}, {b['high']:.2f}{close}  {b['count']:>6}  {_bar(b['count'], largest)}")
        if fmt["dropped"]:
            dropped = ", ".join(f"{k}: {v}" for k, v in fmt["dropped"].items())
            lines.append(f"  dropped by rules: {dropped}")
    return "\n".join(lines)
