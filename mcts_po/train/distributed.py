"""Training on several processes: this process's rank, accelerate's Accelerator, each rank's micro-batches.

Under `accelerate launch` (DDP, FSDP or DeepSpeed, whatever its config file says) or `torchrun
--nproc_per_node N` (which set RANK / WORLD_SIZE / LOCAL_RANK), the trainer hands the policy and the
optimizer to `accelerate.Accelerator.prepare` (DDP: nccl on GPU, one GPU per process; gloo on CPU),
each rank takes every N-th micro-batch, and rank 0 alone saves (docs/scale_out_training.md).

    parallel = data_parallel_from_env()
    accelerator = make_accelerator(device, bf16=False, engine=sharded_engine()) if needs_accelerator(parallel) else None
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (torchrun / `accelerate launch` set the env vars)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def data_parallel_from_env() -> DataParallel:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return DataParallel(rank=int(os.environ.get("RANK", "0")), world_size=world_size)


def sharded_engine() -> str:
    """'fsdp' or 'deepspeed' when `accelerate launch` was given such a config (it sets these env vars), else ''."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    return ""


def needs_accelerator(parallel: DataParallel) -> bool:
    """Several processes, or an FSDP / DeepSpeed launch (which wraps the model even on one process)."""
    return parallel.world_size > 1 or bool(sharded_engine())


def make_accelerator(device: torch.device, bf16: bool, engine: str = "") -> Any:
    """accelerate's Accelerator for this launch: it joins the process group (nccl on GPU, gloo on CPU)
    and reads DDP / FSDP / DeepSpeed settings from the env vars `accelerate launch` set. Under DDP the
    train config's bf16 decides the mixed precision; under FSDP / DeepSpeed (`engine`) the accelerate
    config file's `mixed_precision` does, since it also sets the sharded weights' dtype."""
    from accelerate import Accelerator

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if engine:
        return Accelerator(cpu=device.type == "cpu")
    return Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if bf16 else "no")


def end_accelerator(accelerator: Any) -> None:
    """Wait for every rank, leave the process group and forget accelerate's process state, so that a
    later training in the same process starts clean."""
    from accelerate.state import AcceleratorState

    accelerator.wait_for_everyone()
    accelerator.end_training()
    AcceleratorState._reset_state(reset_partial_state=True)


def weights_fingerprint(parameters: Any) -> list[float]:
    """Two float64 sums over all parameters (values and absolute values): equal on every rank whose
    weights are bit-identical, so a cheap check that data parallel kept the replicas in step."""
    total = torch.zeros((), dtype=torch.float64)
    absolute = torch.zeros((), dtype=torch.float64)
    for p in parameters:
        data = p.detach().to("cpu", torch.float64)
        total += data.sum()
        absolute += data.abs().sum()
    return [total.item(), absolute.item()]


def rank_batches(batches: list[Any], parallel: DataParallel) -> list[Any]:
    """This rank's micro-batches: every world_size-th, the same count on every rank (the rest dropped),
    so that rank r's i-th micro-batch pairs with the other ranks' i-th in one synchronised step."""
    per_rank = len(batches) // parallel.world_size
    return batches[parallel.rank :: parallel.world_size][:per_rank]

