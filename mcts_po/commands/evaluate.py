"""`mcts-po eval`: greedy accuracy, maj@k, any_correct@k (Wilson intervals) and the unbiased pass@k of a model on a task split.

    mcts-po eval --model smollm2-135m --task arithmetic --task-options '{"num_ops": 2}' \\
        --split test --limit 300 --backend transformers --out runs/eval-arith
    mcts-po eval --model runs/loop/round_0/policy --task gsm8k --data ../shared/data/gsm8k \\
        --split test --limit 200 --backend vllm --k 8 --out runs/eval-gsm8k

Writes OUT/results.jsonl (one record per problem: greedy answer and verdict, the samples' verdicts, maj@k votes)
and OUT/summary.json atomically, and prints the summary. Options may also come from a YAML
file (`--config FILE`, top level or under `eval:`); flags override it. A killed run resumes
from OUT/results.partial.jsonl when rerun with the same options.
"""

from __future__ import annotations

import argparse
import sys

from mcts_po.config_utils import add_dataclass_arguments, build_dataclass, load_yaml, section
from mcts_po.progress import quiet_library_bars


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mcts_po.evaluation import EvalConfig

    job = parser.add_argument_group("job")
    job.add_argument("--config", metavar="FILE", help="YAML file of options; flags override it")
    job.add_argument("--out", required=True, metavar="DIR", help="output folder for results.jsonl and summary.json")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, EvalConfig, "evaluation")


def build_config(args: argparse.Namespace):
    from mcts_po.evaluation import EvalConfig

    source = args.config or "command line"
    file_values = section(load_yaml(args.config), "eval", source) if args.config else {}
    return build_dataclass(EvalConfig, file_values, args, source)


def run(args: argparse.Namespace) -> int:
    from mcts_po.evaluation import evaluate_model, format_summary

    config = build_config(args)
    quiet_library_bars(not args.no_progress)
    summary = evaluate_model(config, args.out, progress=not args.no_progress)
    print(format_summary(summary))
    print(f"results: {args.out}/results.jsonl  summary: {args.out}/summary.json", file=sys.stderr)
    return 0
