"""`mcts-po train`: train a policy on extracted preference data (step-dpo, step-apo, tpo, dpo), or a
value model on value data (value, ppm; mcts_po/train/value_model.py).

    mcts-po train --data data/x --method step-dpo --model smollm2-135m --out runs/policy-1 --max-steps 40
    mcts-po train --data data/x/tpo.jsonl --method tpo --model runs/policy-1 --out runs/policy-2 \\
        --ref-model smollm2-135m --lora --learning-rate 1e-4
    mcts-po train --config configs/loop_arithmetic_cpu.yaml --data data/x --method step-apo --model M --out O
    mcts-po train --data data/x --method value --model smollm2-135m --out runs/value-1 --learning-rate 1e-5
    mcts-po train --data data/x --method ppm --model runs/policy-1 --value-init runs/value-1 --out runs/value-2

--data is a JSONL file of rows, or the folder `mcts-po extract --out` wrote (its
<method>.jsonl is read; for dpo the dpo.jsonl). Training flags come from TrainConfig
(mcts_po/train/config.py); `--config FILE` reads them from YAML (top level or under `train:`),
flags override the file. An intermediate step is trained followed by the step delimiter the
search used, which the rows carry (`step_delimiter`, written by `mcts-po extract`). The output folder is a plain HF model folder (+ training_log.json),
written atomically. Several GPUs: `accelerate launch --config_file configs/accelerate/ddp_one_node.yaml
-m mcts_po.cli train ...` (or fsdp_7b.yaml / deepspeed_zero3.yaml, or `torchrun --nproc_per_node N -m
mcts_po.cli train ...`); docs/scale_out_training.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcts_po.config_utils import add_dataclass_arguments, build_dataclass, load_yaml, section
from mcts_po.train.config import TrainConfig
from mcts_po.io_utils import UserError, read_jsonl
from mcts_po.progress import quiet_library_bars

METHODS = ("dpo", "step-dpo", "step-apo", "tpo", "sft", "value", "ppm")
VALUE_METHODS = ("value", "ppm")  # = mcts_po.train.value_model.VALUE_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("job")
    job.add_argument("--data", required=True, metavar="DIR_OR_JSONL", help="rows: a .jsonl file or an extract folder")
    job.add_argument("--method", required=True, choices=METHODS, help="training loss")
    job.add_argument("--model", required=True, help="policy to train: alias, HF hub id or local folder")
    job.add_argument("--out", required=True, metavar="DIR", help="output model folder")
    job.add_argument("--config", metavar="FILE", help="YAML file of training options; flags override it")
    add_dataclass_arguments(parser, TrainConfig, "training")
    from mcts_po.train.config import ValueConfig

    add_dataclass_arguments(parser, ValueConfig, "value model (--method value / ppm; in YAML a `value:` section beside `train:`)")


def rows_file(data: str, method: str) -> Path:
    """The JSONL of rows for `method` inside an extract folder, or `data` itself if it is a file."""
    path = Path(data)
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / f"{method}.jsonl"
        if candidate.is_file():
            return candidate
        present = sorted(p.name for p in path.glob("*.jsonl"))
        raise UserError(f"{path} has no {method}.jsonl (has: {', '.join(present) or 'no .jsonl files'}); "
                        f"run `mcts-po extract --format {method}` or pass the file")
    raise UserError(f"--data {data}: no such file or folder")


def load_rows(data: str, method: str) -> tuple[Path, list[dict]]:
    path = rows_file(data, method)
    rows = [row for _, row in read_jsonl(path)]
    if not rows:
        raise UserError(f"{path}: no rows to train on")
    return path, rows


def build_config(args: argparse.Namespace) -> TrainConfig:
    source = args.config or "command line"
    file_values = section(load_yaml(args.config), "train", source) if args.config else {}
    return build_dataclass(TrainConfig, file_values, args, source)


def run(args: argparse.Namespace) -> int:
    from mcts_po.train.trainer import train_preferences

    config = build_config(args)
    quiet_library_bars(config.progress)
    path, rows = load_rows(args.data, args.method)
    if args.method in VALUE_METHODS:
        from mcts_po.train.config import ValueConfig
        from mcts_po.train.value_model import train_value_model

        value_section = (load_yaml(args.config).get("value") or {}) if args.config else {}
        value_config = build_dataclass(ValueConfig, value_section, args, args.config or "command line")
        out = train_value_model(args.model, rows, args.method, config, args.out, value_config)
    else:
        out = train_preferences(args.model, rows, args.method, config, args.out)
    log = json.loads((Path(out) / "training_log.json").read_text(encoding="utf-8"))
    last = log["history"][-1] if log["history"] else {}
    print(json.dumps({"model": str(out), "rows": len(rows), "data": str(path), "examples": log["examples"],
                      "optimizer_steps": log["optimizer_steps"], "seconds": log["seconds"],
                      "final": {k: v for k, v in last.items() if k != "step"}}, indent=2))
    return 0
