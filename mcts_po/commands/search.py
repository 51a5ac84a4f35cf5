"""`mcts-po search`: build MCTS trees for a task's problems and write them to a run folder.

    mcts-po search --task gsm8k --split test --limit 20 --data ../shared/data/gsm8k \\
        --model smollm2-135m --backend vllm --num-simulations 16 --out runs/x
    mcts-po search --config configs/search_demo.yaml --out runs/demo   # YAML, flags override

    mcts-po search --task jsonl --data my.jsonl --task-options '{"question_field": "q"}' --out runs/mine
    mcts-po search ... --backend vllm --ray-address local --workers 4 --num-gpus-per-worker 1 --out runs/x
        # the chunks over 4 Ray actors, one engine each, into the same run folder (docs/scale_out_ray.md)

Rerunning the same command resumes (finished problems are skipped). Every option is a flag,
generated from `SearchJob` (mcts_po/search_runner.py), `SearchConfig` and `SamplingConfig`;
the YAML file sets the job options at the top level and the search and sampling options under
`search:` and `sampling:` (or at the top level); flags override the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mcts_po.config_utils import add_dataclass_arguments, build_dataclass, load_yaml, route_options
from mcts_po.io_utils import UserError
from mcts_po.llm.config import SamplingConfig
from mcts_po.search.config import SearchConfig
from mcts_po.search_runner import SearchJob
from mcts_po.progress import quiet_library_bars

SECTIONS = {"search": SearchConfig, "sampling": SamplingConfig}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("config file")
    job.add_argument("--config", help="YAML file of options; flags given here override it")
    job.add_argument("--base-url", help="http backend: server URL, e.g. http://127.0.0.1:8000/v1 (a backend option)")
    job.add_argument("--dtype", help="model dtype for the backend (default: auto; a backend option)")
    job.add_argument("--backend-option", action="append", metavar="KEY=VALUE",
                     help="one backend option, repeatable, value read as YAML (see --backend-options)")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, SearchJob, "job", skip=("progress",))
    add_dataclass_arguments(parser, SearchConfig, "search")
    add_dataclass_arguments(parser, SamplingConfig, "sampling")


def build_job(args: argparse.Namespace) -> SearchJob:
    """The SearchJob of a command line: dataclass defaults < the YAML file < flags."""
    source = args.config or "command line"
    top, sections = route_options(load_yaml(args.config) if args.config else {}, SearchJob, SECTIONS, source)
    search = build_dataclass(SearchConfig, sections["search"], args, source)
    sampling = build_dataclass(SamplingConfig, sections["sampling"], args, source)
    backend_options = dict(top.pop("backend_options", None) or {})
    backend_options.update(getattr(args, "backend_options", None) or {})
    args.backend_options = None
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
    if args.no_progress:
        top["progress"] = False
    job = build_dataclass(SearchJob, {**top, "backend_options": backend_options}, args, source,
                          search=search, sampling=sampling)
    if not job.out:
        raise UserError("--out RUN_FOLDER is required (or `out:` in the config file)")
    return job


def run(args: argparse.Namespace) -> int:
    from mcts_po.search_runner import run_search_job

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    job = build_job(args)
    quiet_library_bars(job.progress)
    summary = run_search_job(job)
    brief = {k: summary[k] for k in ("problems", "problems_with_correct_terminal", "greedy_correct", "best_path_correct",
                                     "nodes", "generated_tokens", "prefix_cache_hit_rate")}
    brief["generated_tokens_per_second"] = summary["this_invocation"]["generated_tokens_per_second"]
    brief["search_seconds"] = round(summary["this_invocation"]["search_seconds"], 1)
    print(json.dumps(brief, indent=2), file=sys.stdout)
    print(f"trees: {job.out}/trees.jsonl  summary: {job.out}/summary.json", file=sys.stderr)
    return 0
