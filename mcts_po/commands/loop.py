"""`mcts-po loop`: AlphaZero-style rounds (search → extract → train → evaluate), resumable per phase.

    mcts-po loop --config configs/loop_arithmetic_cpu.yaml --out runs/loop-arith
    mcts-po loop --config configs/loop_arithmetic_cpu.yaml --out runs/loop-arith --rounds 3   # extend a run
    mcts-po loop --config configs/loop_gsm8k.yaml --out runs/loop-gsm8k --backend vllm --method step-apo

The YAML file holds the loop options at the top level and `search:`, `sampling:`, `extract:`
and `train:` sections (see configs/ and docs/loop.md). Top-level flags override the file.
Rerunning the same command skips finished phases. Writes RUN/metrics.json and RUN/metrics.png.
"""

from __future__ import annotations

import argparse
import json

from mcts_po.io_utils import UserError

# Top-level loop options that get a flag (the rest are YAML-only).
FLAG_OPTIONS = ("rounds", "method", "model", "reference", "backend", "problems_per_round", "eval_limit", "eval_k",
                "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("job")
    job.add_argument("--config", metavar="FILE", help="YAML file of loop options (configs/loop_*.yaml)")
    job.add_argument("--out", required=True, metavar="RUN", help="run folder (everything of the loop goes here)")
    job.add_argument("--no-progress", action="store_true", help="no progress bars (phase lines still print)")
    job.add_argument("--no-plot", action="store_true", help="do not draw metrics.png")
    job.add_argument("--base-url", help="http backend: server URL, e.g. http://127.0.0.1:8000/v1")
    job.add_argument("--rounds", type=int, help="number of rounds (may grow on a rerun)")
    job.add_argument("--method", help="step-dpo, step-apo, tpo or dpo")
    job.add_argument("--model", help="initial policy")
    job.add_argument("--reference", help="initial or previous")
    job.add_argument("--backend", help="transformers, vllm or http")
    job.add_argument("--problems-per-round", type=int, help="train problems searched per round")
    job.add_argument("--eval-limit", type=int, help="held-out problems evaluated")
    job.add_argument("--eval-k", type=int, help="maj@k samples in the evaluation")
    job.add_argument("--seed", type=int, help="base seed")


def build_config(args: argparse.Namespace):
    from mcts_po.config_utils import load_yaml
    from mcts_po.loop import LoopConfig

    values = load_yaml(args.config) if args.config else {}
    for name in FLAG_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.no_progress:
        values["progress"] = False
    if args.base_url:
        values["backend_options"] = {**(values.get("backend_options") or {}), "base_url": args.base_url}
    return LoopConfig.from_yaml_dict(values, args.config or "command line")


def run(args: argparse.Namespace) -> int:
    from mcts_po.loop import run_loop

    config = build_config(args)
    metrics = run_loop(config, args.out, plot=not args.no_plot)
    print(json.dumps({"method": metrics["method"], "accuracy_by_policy": metrics["accuracy_by_policy"],
                      "rows_by_round": [r.get("rows") for r in metrics["rounds"]],
                      "total_seconds": metrics["total_seconds"]}, indent=2))
    if not metrics["policies"]:
        raise UserError("no policy was evaluated")
    return 0
