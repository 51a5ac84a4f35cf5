"""`mcts-po search`: build MCTS trees for a task's problems and write them to a run folder.

    mcts-po search --task gsm8k --split test --limit 20 --data ../shared/data/gsm8k \\
        --model smollm2-135m --backend vllm --num-simulations 16 --out runs/x
    mcts-po search --config configs/search_demo.yaml --out runs/demo   # YAML, flags override

Rerunning the same command resumes (finished problems are skipped). The YAML file may set
any job option at the top level (task, split, limit, offset, data, model, backend,
problems_in_flight, greedy_baseline, backend_options, task_options) and the search and
sampling options under `search:` and `sampling:` (or at the top level).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from mcts_po.config_utils import add_dataclass_arguments, build_dataclass, load_yaml
from mcts_po.io_utils import UserError
from mcts_po.llm.policy import SamplingConfig
from mcts_po.search.config import SearchConfig

JOB_KEYS = ("task", "split", "limit", "offset", "data", "model", "backend", "problems_in_flight",
            "greedy_baseline", "backend_options", "task_options", "out")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("job")
    job.add_argument("--config", help="YAML file of options; flags given here override it")
    job.add_argument("--task", help="task name: demo (default), gsm8k, math, arithmetic, jsonl")
    job.add_argument("--split", help="split to load (default: test)")
    job.add_argument("--limit", type=int, help="number of problems")
    job.add_argument("--offset", type=int, help="skip this many problems first")
    job.add_argument("--data", help="problems file/folder or hub dataset id")
    job.add_argument("--model", help="HF hub id, local folder or alias (default: smollm2-135m)")
    job.add_argument("--backend", help="vllm (default), transformers or http")
    job.add_argument("--base-url", help="http backend: server URL, e.g. http://127.0.0.1:8000/v1")
    job.add_argument("--dtype", help="model dtype for the backend (default: auto)")
    job.add_argument("--backend-option", action="append", metavar="KEY=VALUE",
                     help="one backend option, repeatable, value read as YAML (http: max_concurrency, "
                          "retry_budget_s, request_timeout_s, served_model; transformers: max_batch_size, device)")
    job.add_argument("--out", help="run folder (required)")
    job.add_argument("--problems-in-flight", type=int, help="problems searched together (default: 32)")
    job.add_argument("--greedy-baseline", action=argparse.BooleanOptionalAction, default=None,
                     help="also decode each problem greedily, for comparison (default: on)")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, SearchConfig, "search")
    add_dataclass_arguments(parser, SamplingConfig, "sampling")


def build_job(args: argparse.Namespace):
    from mcts_po.search_runner import SearchJob

    file_values = load_yaml(args.config) if args.config else {}
    source = args.config or "command line"
    search_values = dict(file_values.pop("search", {}) or {})
    sampling_values = dict(file_values.pop("sampling", {}) or {})
    search_names = {f.name for f in dataclasses.fields(SearchConfig)}
    sampling_names = {f.name for f in dataclasses.fields(SamplingConfig)}
    job_values = {}
    for key, value in file_values.items():
        key = key.replace("-", "_")
        if key in search_names:
            search_values[key] = value
        elif key in sampling_names:
            sampling_values[key] = value
        elif key in JOB_KEYS:
            job_values[key] = value
        else:
            raise UserError(f"{source}: unknown option {key!r}")
    search = build_dataclass(SearchConfig, search_values, args, source)
    sampling = build_dataclass(SamplingConfig, sampling_values, args, source)
    for key in JOB_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            job_values[key] = value
    backend_options = dict(job_values.pop("backend_options", {}) or {})
    if args.base_url:
        backend_options["base_url"] = args.base_url
    if args.dtype:
        backend_options["dtype"] = args.dtype
    for item in getattr(args, "backend_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--backend-option {item!r}: expected KEY=VALUE, e.g. retry_budget_s=300")
        import yaml

        backend_options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else ""
    if not job_values.get("out"):
        raise UserError("--out RUN_FOLDER is required")
    return SearchJob(search=search, sampling=sampling, backend_options=backend_options,
                     progress=not args.no_progress, **job_values)


def run(args: argparse.Namespace) -> int:
    from mcts_po.search_runner import run_search_job

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    job = build_job(args)
    summary = run_search_job(job)
    brief = {k: summary[k] for k in ("problems", "problems_with_correct_terminal", "greedy_correct", "best_path_correct",
                                     "nodes", "generated_tokens", "prefix_cache_hit_rate")}
    brief["generated_tokens_per_second"] = summary["this_invocation"]["generated_tokens_per_second"]
    brief["search_seconds"] = round(summary["this_invocation"]["search_seconds"], 1)
    print(json.dumps(brief, indent=2), file=sys.stdout)
    print(f"trees: {job.out}/trees.jsonl  summary: {job.out}/summary.json", file=sys.stderr)
    return 0
