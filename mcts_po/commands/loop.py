"""`mcts-po loop`: AlphaZero-style rounds (search → extract → train → evaluate), resumable per phase.

    mcts-po loop --config configs/loop_arithmetic_cpu.yaml --out runs/loop-arith
    mcts-po loop --config configs/loop_arithmetic_cpu.yaml --out runs/loop-arith --rounds 3   # extend a run
    mcts-po loop --config configs/loop_gsm8k.yaml --out runs/loop-gsm8k --backend vllm --method step-apo

The YAML file holds the loop options at the top level and `search:`, `sampling:`, `extract:`,
`train:` and `value:` (a value model trained each round: mcts_po/loop_value.py) sections (see
configs/ and docs/loop.md). Top-level flags override the file.
Rerunning the same command skips finished phases. Writes RUN/metrics.json and RUN/metrics.png.
"""

from __future__ import annotations

import argparse
import json

from mcts_po.io_utils import UserError
from mcts_po.progress import quiet_library_bars

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mcts_po.config_utils import add_dataclass_arguments
    from mcts_po.loop import LoopConfig

    job = parser.add_argument_group("job")
    job.add_argument("--config", metavar="FILE", help="YAML file of loop options (configs/loop_*.yaml)")
    job.add_argument("--out", required=True, metavar="RUN", help="run folder (everything of the loop goes here)")
    job.add_argument("--no-progress", action="store_true", help="no progress bars (phase lines still print)")
    job.add_argument("--no-plot", action="store_true", help="do not draw metrics.png")
    job.add_argument("--base-url", help="http backend: server URL, e.g. http://127.0.0.1:8000/v1 (a backend option)")
    add_dataclass_arguments(parser, LoopConfig, "loop", skip=("progress",))


def build_config(args: argparse.Namespace):
    """The LoopConfig of a command line: defaults < the YAML file < top-level flags (the sections
    search/sampling/extract/train/value come from the file). The flags are merged into the file's
    values before the config is checked, so a file may leave to a flag what its settings need
    (`method: rft` in the file, `--flat-budget-run` on the command line)."""
    from mcts_po.config_utils import flag_fields, load_yaml
    from mcts_po.loop import LoopConfig

    source = args.config or "command line"
    values = dict(load_yaml(args.config) or {}) if args.config else {}
    values = {key.replace("-", "_"): value for key, value in values.items()}
    if args.no_progress:
        args.progress = False
    if args.base_url:
        file_options = values.get("backend_options") or {}
        args.backend_options = {**(args.backend_options or file_options), "base_url": args.base_url}
    for f, _ in flag_fields(LoopConfig):
        flagged = getattr(args, f.name, None)
        if flagged is not None:
            values[f.name] = flagged
    return LoopConfig.from_yaml_dict(values, source)


def run(args: argparse.Namespace) -> int:
    from mcts_po.loop import run_loop

    config = build_config(args)
    quiet_library_bars(config.progress)
    metrics = run_loop(config, args.out, plot=not args.no_plot)
    brief = {"method": metrics["method"], "accuracy_by_policy": metrics["accuracy_by_policy"],
             "rows_by_round": [r.get("rows") for r in metrics["rounds"]], "total_seconds": metrics["total_seconds"]}
    if "value_quality_by_round" in metrics:
        brief["value_quality_by_round"] = [
            {k: line[k] for k in ("round", "value_model_auc", "value_model_brier", "self_eval_auc", "self_eval_brier")}
            for line in metrics["value_quality_by_round"]]
    print(json.dumps(brief, indent=2))
    if not metrics["policies"]:
        raise UserError("no policy was evaluated")
    return 0
