"""Is the README demo reproducible? Run the demo search several times and compare the trees.

Each run is a fresh `mcts-po search --config configs/demo.yaml` (its own process and vLLM
engine, same seed) into its own folder; the trees are compared node by node (text, visits,
values, verdicts; timings and token counts of the cache left out). Runs named in `--runs` may
set a vLLM dtype, so that the effect of the engine's precision (which `dtype: auto` picks by
processor: bfloat16 with bf16 instructions, float32 on AVX2-only CPUs) is measured too.
`--engine-core` runs vLLM's engine core in the search's own process (`in-process`,
`VLLM_ENABLE_V1_MULTIPROCESSING=0`: deterministic scheduling, mcts_po's default on small CPU
machines) or in a process of its own (`own-process`, vLLM's default); the published file keeps
one record per engine-core mode.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/check_demo_reproducibility.py \
        --limit 6 --num-simulations 6 --runs auto,auto --engine-core own-process --publish
    # results: runs/demo_reproducibility/results.json (and a table on stdout);
    # --publish also writes benchmarks/demo_reproducibility.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import atomic_write_json  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402
from mcts_po.tree_io import read_tree_file  # noqa: E402

# What a node generated (its own content, in creation order). The search statistics (visits,
# value sums, children) are left out of the search for the first difference: they change at the
# root as soon as anything below it differs, so they would always point at node 0.
OWN_FIELDS = ("parent", "kind", "text", "logprob_sum", "prior", "self_eval", "rollout_value", "rollout_text", "terminal",
              "answer", "correct")
STAT_FIELDS = ("children", "visits", "value_sum")


def node_records(tree) -> list[dict]:
    return tree.to_dict()["nodes"]


def first_difference(a: list[dict], b: list[dict]) -> dict | None:
    """The first node (by creation order) whose own content differs, with the fields that differ;
    None when both trees have the same nodes with the same content and statistics."""
    for index, (x, y) in enumerate(zip(a, b)):
        fields = [name for name in OWN_FIELDS if x.get(name) != y.get(name)]
        if fields:
            return {"node": index, "depth": x.get("depth"), "wave": x.get("wave"), "fields": fields,
                    "text": [str(x.get("text"))[:120], str(y.get("text"))[:120]]}
    if len(a) != len(b):
        return {"node": min(len(a), len(b)), "depth": None, "fields": ["node count"], "text": None}
    for index, (x, y) in enumerate(zip(a, b)):
        fields = [name for name in STAT_FIELDS if x.get(name) != y.get(name)]
        if fields:
            return {"node": index, "depth": None, "fields": fields, "text": None}
    return None


def compare(reference: list, other: list) -> dict:
    """Per-problem agreement of two runs' trees (matched by problem id)."""
    ref = {t.problem_id: t for t in reference}
    oth = {t.problem_id: t for t in other}
    same, differences = [], {}
    for problem_id in sorted(ref):
        if problem_id not in oth:
            differences[problem_id] = "missing"
            continue
        difference = first_difference(node_records(ref[problem_id]), node_records(oth[problem_id]))
        if difference is None:
            same.append(problem_id)
        else:
            differences[problem_id] = difference
    return {"identical_trees": len(same), "trees": len(ref), "first_difference": differences}


ENGINE_CORE = {"in-process": "0", "own-process": "1"}  # -> VLLM_ENABLE_V1_MULTIPROCESSING


def run_demo(out: Path, dtype: str, limit: int, simulations: int, engine_core: str) -> dict:
    command = [str(REPO / ".venv" / "bin" / "mcts-po"), "search", "--config", str(REPO / "configs" / "demo.yaml"),
               "--out", str(out), "--limit", str(limit), "--num-simulations", str(simulations), "--no-progress"]
    if dtype != "auto":
        command += ["--backend-option", f"dtype={dtype}"]
    started = time.perf_counter()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": ENGINE_CORE[engine_core]}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"dtype": dtype, "wall_seconds": round(seconds, 1), "command": " ".join(command[1:]),
            "problems_with_correct_terminal": summary["problems_with_correct_terminal"],
            "problems": summary["problems"], "nodes": summary["nodes"], "generated_tokens": summary["generated_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=12, help="demo problems (the demo's own: 12)")
    parser.add_argument("--num-simulations", type=int, default=12, help="simulations per tree (the demo's own: 12)")
    parser.add_argument("--runs", default="auto,auto", help="comma-separated vLLM dtypes, one run each (auto = the demo's)")
    parser.add_argument("--engine-core", choices=sorted(ENGINE_CORE), default="in-process",
                        help="vLLM's engine core in the search's process (mcts_po's default on small CPU machines) or its own")
    parser.add_argument("--work", default="runs/demo_reproducibility")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/demo_reproducibility.json")
    args = parser.parse_args()

    from mcts_po.backends.vllm_backend import cpu_engine_dtype

    work = REPO / args.work
    work.mkdir(parents=True, exist_ok=True)
    runs, trees = [], []
    for index, dtype in enumerate(args.runs.split(",")):
        out = work / f"run_{index}_{dtype}"
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        record = run_demo(out, dtype, args.limit, args.num_simulations, args.engine_core)
        runs.append(record)
        trees.append(read_tree_file(out / "trees.jsonl"))
        print(f"run {index} ({dtype}): {record['problems_with_correct_terminal']}/{record['problems']} with a correct "
              f"terminal, {record['nodes']} nodes, {record['wall_seconds']} s", flush=True)
    comparisons = {f"run_0 vs run_{i}": compare(trees[0], trees[i]) for i in range(1, len(trees))}
    results = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "auto_dtype": cpu_engine_dtype()},
               "commit": source_commit(REPO),
               "engine_core": args.engine_core, "limit": args.limit, "num_simulations": args.num_simulations,
               "runs": runs, "comparisons": comparisons}
    atomic_write_json(work / "results.json", results)
    if args.publish:
        published = REPO / "benchmarks" / "demo_reproducibility.json"
        records = json.loads(published.read_text(encoding="utf-8")) if published.exists() else {}
        records = records if "runs" not in records else {}  # an older single-record file is replaced
        records[f"engine core {args.engine_core}"] = results
        atomic_write_json(published, records)
    for name, result in comparisons.items():
        print(f"{name}: {result['identical_trees']}/{result['trees']} identical trees", flush=True)
        for problem_id, difference in result["first_difference"].items():
            print(f"  {problem_id}: {difference}", flush=True)


if __name__ == "__main__":
    main()
