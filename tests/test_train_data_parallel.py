"""Training on several processes under `accelerate launch` (DDP, gloo on CPU): 2 processes give the same
weights as 1 process with the same global batch; the loop's training phase runs under the launcher.

Each of the 2 ranks trains on batch 1 (every other micro-batch), DDP averages the gradients, so one
step sees the same 2 pairs as a single process with batch 2. Launched with the repo's DDP config,
`--num_processes 2`, on the CPU: `accelerate launch --cpu --num_processes 2` would start ONE process
(accelerate's CPU path runs several only through mpirun with --mpirun_hostfile; no MPI here), while
the MULTI_GPU config starts 2 through torch.distributed.run and, without a GPU, each process's
Accelerator(cpu=True) joins a gloo group. Tiny random Llama, no real model:

    .venv/bin/pytest -q tests/test_train_data_parallel.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from test_trainer import STEP_ROWS, save_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DDP_CONFIG = REPO / "configs" / "accelerate" / "ddp_one_node.yaml"
ROWS = STEP_ROWS + STEP_ROWS[:1]  # 4 pairs -> 2 optimizer steps of 2 pairs


def train_config(batch_size: int):
    from mcts_po.train.config import TrainConfig

    return TrainConfig(learning_rate=1e-2, batch_size=batch_size, max_length=64, bf16=False, progress=False,
                       device="cpu", shuffle=False)


def launch_env() -> dict[str, str]:
    """The launched processes import this checkout's mcts_po and the tests' helpers, one thread each."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_rank_batches_split_evenly_and_drop_the_remainder():
    from mcts_po.train.distributed import DataParallel, rank_batches

    batches = list(range(7))
    assert rank_batches(batches, DataParallel(rank=0, world_size=2)) == [0, 2, 4]
    assert rank_batches(batches, DataParallel(rank=1, world_size=2)) == [1, 3, 5]
    assert rank_batches(batches, DataParallel(rank=2, world_size=3)) == [2, 5]
    assert rank_batches(batches, DataParallel()) == batches


def test_accelerate_configs_load_and_name_their_engine():
    from accelerate.commands.config.config_args import load_config_from_file

    engines, loaded = {}, {}
    for name in ("ddp_one_node", "multi_node", "fsdp_7b", "deepspeed_zero3"):
        loaded[name] = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
        engines[name] = loaded[name].distributed_type.value
    assert loaded["multi_node"].num_machines == 2 and loaded["multi_node"].num_processes == 16
    assert loaded["fsdp_7b"].fsdp_config["fsdp_version"] == 2
    assert loaded["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    assert engines == {"ddp_one_node": "MULTI_GPU", "multi_node": "MULTI_GPU", "fsdp_7b": "FSDP",
                       "deepspeed_zero3": "DEEPSPEED"}


def test_two_processes_under_accelerate_launch_train_the_same_weights_as_one(tmp_path):
    from transformers import AutoModelForCausalLM

    from mcts_po.train.trainer import train_preferences

    base = save_tiny_model(tmp_path / "base")
    saves = tmp_path / "saves"
    saves.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--num_processes", "2", "--main_process_port", free_port(), str(REPO / "tests" / "ddp_train_worker.py"),
               base, str(tmp_path / "ddp"), str(saves)]
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train_preferences(base, ROWS, "step-dpo", train_config(batch_size=2), tmp_path / "single")

    log = json.loads((tmp_path / "ddp" / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["distributed"] == "ddp" and log["optimizer_steps"] == 2
    rank0, rank1 = log["rank_examples"]  # both ranks saw different rows, all 4 between them
    assert rank0 == [0, 2] and rank1 == [1, 3]
    fingerprints = log["rank_weights_fingerprint"]  # gradients were averaged: the replicas agree bit for bit
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert sorted(p.name for p in saves.iterdir()) == ["rank0"]  # rank 0 alone wrote the checkpoint
    assert not list(tmp_path.glob(".ddp.*"))  # and left no staging folder

    ddp = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp").state_dict()
    single = AutoModelForCausalLM.from_pretrained(tmp_path / "single").state_dict()
    initial = AutoModelForCausalLM.from_pretrained(base).state_dict()
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    differ = max((ddp[k] - single[k]).abs().max().item() for k in single)
    assert moved > 1e-2  # training changed the weights
    assert differ < 0.01 * moved, (differ, moved)  # ...and both runs changed them the same way
    assert fingerprints[0][0] == pytest.approx(sum(v.double().sum().item() for v in ddp.values()), rel=1e-6)


def test_loop_training_phase_runs_under_the_launcher(tmp_path, monkeypatch):
    import dataclasses

    from mcts_po.io_utils import atomic_write_text
    from mcts_po.loop import LoopConfig, LoopPhases

    base = save_tiny_model(tmp_path / "base")
    data = tmp_path / "round_0" / "data"
    data.mkdir(parents=True)
    atomic_write_text(data / "step-dpo.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS))
    launcher = f"accelerate launch --config_file {DDP_CONFIG} --num_processes 2 --main_process_port {free_port()}"
    config = LoopConfig(model=base, backend="transformers", progress=False, train_launcher=launcher,
                        train=dataclasses.replace(train_config(batch_size=1)))
    for key, value in launch_env().items():
        monkeypatch.setenv(key, value)
    phases = LoopPhases(config, log=lambda message: None)
    result = phases.train(0, base, base, data, tmp_path / "round_0" / "policy")
    assert result["trained"] and result["optimizer_steps"] == 2 and result["rows"] == 4
    log = json.loads((tmp_path / "round_0" / "policy" / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["rank_examples"] == [[0, 2], [1, 3]]
    assert log["config"]["seed"] == result["seed"]  # the loop's derived seed reached the launched trainer
    settings = json.loads((tmp_path / "round_0" / "train_launch.json").read_text())
    assert settings["train"]["ref_model"] == base


def test_loop_refuses_to_run_as_several_processes(tmp_path, monkeypatch):
    from mcts_po.io_utils import UserError
    from mcts_po.loop import LoopConfig, run_loop

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="train_launcher"):
        run_loop(LoopConfig(backend="transformers"), tmp_path / "run", phases=object())
    with pytest.raises(ValueError, match="train_launcher"):
        LoopConfig(train_launcher="mpirun -n 2")
