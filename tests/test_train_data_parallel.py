"""Data-parallel training (torchrun / `accelerate launch` env vars): 2 CPU processes over gloo give the
same weights as 1 process with the same global batch.

Each of the 2 ranks trains on batch 1 (every other micro-batch), DDP averages the gradients, so
one step sees the same 2 pairs as a single process with batch 2. Tiny random Llama, no real model:

    .venv/bin/pytest -q tests/test_train_data_parallel.py
"""

from __future__ import annotations

import json
import os
import socket

import pytest

torch = pytest.importorskip("torch")

from test_trainer import STEP_ROWS, save_tiny_model  # noqa: E402

ROWS = STEP_ROWS + STEP_ROWS[:1]  # 4 pairs -> 2 optimizer steps of 2 pairs


def train_config(batch_size: int):
    from mcts_po.train.config import TrainConfig

    return TrainConfig(learning_rate=1e-2, batch_size=batch_size, max_length=64, bf16=False, progress=False,
                       device="cpu", shuffle=False)


def rank_worker(rank: int, base: str, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mcts_po.train.trainer import train_preferences

    train_preferences(base, ROWS, "step-dpo", train_config(batch_size=1), out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_batches_split_evenly_and_drop_the_remainder():
    from mcts_po.train.distributed import DataParallel, rank_batches

    batches = list(range(7))
    assert rank_batches(batches, DataParallel(rank=0, world_size=2)) == [0, 2, 4]
    assert rank_batches(batches, DataParallel(rank=1, world_size=2)) == [1, 3, 5]
    assert rank_batches(batches, DataParallel(rank=2, world_size=3)) == [2, 5]
    assert rank_batches(batches, DataParallel()) == batches


def test_two_gloo_processes_train_the_same_weights_as_one(tmp_path):
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    from mcts_po.train.trainer import train_preferences

    base = save_tiny_model(tmp_path / "base")
    mp.spawn(rank_worker, args=(base, str(tmp_path / "ddp"), free_port()), nprocs=2)
    train_preferences(base, ROWS, "step-dpo", train_config(batch_size=2), tmp_path / "single")
    log = json.loads((tmp_path / "ddp" / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["optimizer_steps"] == 2
    ddp = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp").state_dict()
    single = AutoModelForCausalLM.from_pretrained(tmp_path / "single").state_dict()
    initial = AutoModelForCausalLM.from_pretrained(base).state_dict()
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    differ = max((ddp[k] - single[k]).abs().max().item() for k in single)
    assert moved > 1e-2  # training changed the weights
    assert differ < 0.01 * moved, (differ, moved)  # ...and both runs changed them the same way
