"""Models in and out of training: device and precision, loading, LoRA, the saved folder and its log.

Shared by our trainer (`mcts_po.train.trainer`) and the TRL path (`mcts_po.train.trl_dpo`).
A saved checkpoint is a plain HF folder (`save_pretrained` + tokenizer + `training_log.json`),
written atomically (a staging folder renamed into place).

    device = resolve_device("auto"); model = load_causal_lm("smollm2-135m", device)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mcts_po.io_utils import UserError
from mcts_po.precision import choose_bf16
from mcts_po.train.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun / accelerate launch
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)



def load_causal_lm(path: str, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    from mcts_po.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(path), dtype=torch.float32)
    return model.to(device)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    from mcts_po.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = config.lora_target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora_config)


def save_checkpoint(model: Any, tokenizer: Any, output_dir: Path, config: TrainConfig, log: dict[str, Any],
                    state_dict: dict[str, Any] | None = None) -> Path:
    """Merge LoRA if any, save weights (config.save_dtype) + tokenizer + training_log.json atomically.

    `state_dict`: the full weights gathered from shards (FSDP / DeepSpeed ZeRO-3), saved in place of
    the model's own (which hold only this rank's shard)."""
    dtype = getattr(torch, config.save_dtype)
    if state_dict is not None:
        state_dict = {k: v.to("cpu", dtype) if v.is_floating_point() else v.to("cpu") for k, v in state_dict.items()}
    else:
        if config.lora:
            model = model.merge_and_unload()
        model = model.to("cpu").to(dtype)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}."))
    try:
        model.save_pretrained(staging, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(staging)
        (staging / "training_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def resolve_precision(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str]:
    """`config` with bf16 'auto' resolved for `device` to 'true'/'false', and the reason (logged)."""
    use_bf16, reason = choose_bf16(config.bf16, device.type)
    print(f"train: {'bf16 autocast' if use_bf16 else 'float32'} ({reason})", file=sys.stderr)
    return replace(config, bf16="true" if use_bf16 else "false"), reason


def training_log(method: str, model_path: str, config: TrainConfig, num_examples: int, num_rows: int,
                 optimizer_steps: int, started: float, device: torch.device, history: list[dict[str, float]],
                 **extra: Any) -> dict[str, Any]:
    """The `training_log.json` saved beside a checkpoint (`started`: time.monotonic() at the start)."""
    return {"method": method, "model": model_path, "reference": config.ref_model or model_path,
            "examples": num_examples, "rows": num_rows, "optimizer_steps": optimizer_steps,
            "seconds": round(time.monotonic() - started, 2), "device": str(device), **extra,
            "config": config.to_dict(), "history": history}


