"""Data-parallel training: this process's rank, the process group, each rank's micro-batches.

Under `torchrun --nproc_per_node N` or `accelerate launch --multi_gpu --num_processes N`
(which set RANK / WORLD_SIZE / LOCAL_RANK) the trainer wraps the policy in
DistributedDataParallel (nccl on GPU, one GPU per process; gloo on CPU), each rank takes every
N-th micro-batch and rank 0 saves.

    parallel = data_parallel_from_env()
    created = start_data_parallel(parallel, device)
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


def start_data_parallel(parallel: DataParallel, device: torch.device) -> bool:
    """Join the process group (nccl on GPU, gloo on CPU); True when this call created it."""
    import torch.distributed as dist

    if parallel.world_size == 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def rank_batches(batches: list[Any], parallel: DataParallel) -> list[Any]:
    """This rank's micro-batches: every world_size-th, the same count on every rank (the rest dropped),
    so that rank r's i-th micro-batch pairs with the other ranks' i-th in one synchronised step."""
    per_rank = len(batches) // parallel.world_size
    return batches[parallel.rank :: parallel.world_size][:per_rank]

