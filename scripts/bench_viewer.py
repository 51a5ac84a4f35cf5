"""Measure how large a tree the offline HTML viewer renders quickly, in headless Chromium.

    PYTHONPATH=. .venv/bin/python scripts/bench_viewer.py                    # sizes 200 .. 20000
    PYTHONPATH=. .venv/bin/python scripts/bench_viewer.py --sizes 200 1000 --repeats 5 --json-out runs/bench_viewer/results.json

For each size it writes a one-tree page from `synthetic_tree(size, seed)`, opens it in a
fresh headless Chromium (mcts_po.graphs.headless_chromium) and reads numbers the page
writes into the DOM:
- render_ms: the viewer's renderTree() (build every node's DOM), from performance.now();
- ready_ms: performance.now() when rendering ends, i.e. since navigation start: HTML
  parse + JSON.parse of the embedded data + render;
- painted_ms: performance.now() once the first frame after rendering has been painted
  (a task queued from requestAnimationFrame) — the time a user waits to see the tree;
- click_ms: a click on the deepest node until the detail panel is filled and laid out;
- fold_ms: "collapse all" then "expand all", with layout;
- open_s: wall time in Python from Page.navigate to the page's ready flag.
Medians over `--repeats` page loads are printed as a Markdown table (used in docs/graphs.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mcts_po.graphs.headless_chromium import ChromiumPage, find_chromium
from mcts_po.graphs.html_viewer import write_viewer
from mcts_po.graphs.synthetic_trees import synthetic_tree

READY = "document.body && document.body.hasAttribute('data-painted-ms')"
MEASURE_JS = """(function () {
  var h = 0, t0;
  var nodes = window.mctsViewer.state.nodes, deepest = 0;
  for (var i = 0; i < nodes.length; i++) if (nodes[i].depth > nodes[deepest].depth) deepest = i;
  var row = document.querySelector('.node[data-node-id="' + deepest + '"]');
  t0 = performance.now(); row.click(); h += document.getElementById('detail').offsetHeight;
  var click = performance.now() - t0;
  t0 = performance.now(); document.getElementById('collapse-all').click(); h += document.body.offsetHeight;
  document.getElementById('expand-all').click(); h += document.body.offsetHeight;
  var fold = performance.now() - t0;
  return {render_ms: Number(document.body.dataset.renderMs), ready_ms: Number(document.body.dataset.readyMs),
          painted_ms: Number(document.body.dataset.paintedMs), click_ms: click, fold_ms: fold, nodes: document.querySelectorAll('.node').length,
          max_depth: nodes[deepest].depth};
})()"""


def measure(size: int, seed: int, repeats: int, work_dir: Path, chromium: str) -> dict:
    tree = synthetic_tree(size, seed=seed)
    path = write_viewer([tree], work_dir / f"tree-{size}.html", title=f"synthetic {size}")
    runs = []
    for _ in range(repeats):
        with ChromiumPage(chromium) as page:  # a fresh browser per load: no warm caches
            start = time.perf_counter()
            page.open(path.resolve().as_uri(), ready=READY)
            open_s = time.perf_counter() - start
            result = page.evaluate(MEASURE_JS)
            if result["nodes"] != size:
                raise RuntimeError(f"rendered {result['nodes']} nodes, expected {size}")
            result["open_s"] = open_s
            runs.append(result)
    keys = ("render_ms", "ready_ms", "painted_ms", "click_ms", "fold_ms", "open_s")
    summary = {key: statistics.median(r[key] for r in runs) for key in keys}
    summary.update(size=size, max_depth=runs[0]["max_depth"], html_kb=path.stat().st_size / 1024, repeats=repeats)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium binary found (Debian: apt-get install chromium)")
    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as work_dir:
        for size in args.sizes:
            results.append(measure(size, args.seed, args.repeats, Path(work_dir), chromium))
            print(f"measured {size} nodes", flush=True)
    print(f"\nload average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; Chromium: {chromium}")
    print("\n| nodes | max depth | HTML KB | render ms | ready ms | painted ms | click ms | fold+unfold ms | open s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['size']} | {r['max_depth']} | {r['html_kb']:.0f} | {r['render_ms']:.0f} | {r['ready_ms']:.0f} | "
              f"{r['painted_ms']:.0f} | {r['click_ms']:.1f} | {r['fold_ms']:.0f} | {r['open_s']:.2f} |")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"load_before": load_before, "results": results}, indent=2) + "\n",
                                       encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
