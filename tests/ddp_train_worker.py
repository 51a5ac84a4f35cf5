"""One rank of the data-parallel test (tests/test_train_data_parallel.py): not a test module itself.

Trains the tiny test model on the 4 test pairs with batch 1 per rank, and records which rank called
`save_checkpoint` (a spy that then saves for real), so the test can check that rank 0 alone wrote.
Launched by the test as

    python -m accelerate.commands.launch --config_file configs/accelerate/ddp_one_node.yaml \\
        --num_processes 2 tests/ddp_train_worker.py BASE OUT SAVES_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import mcts_po.train.trainer as trainer
from test_train_data_parallel import ROWS, train_config


def main(base: str, out: str, saves: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared CPU
    real_save = trainer.save_checkpoint

    def spy(*args, **kwargs):
        Path(saves, f"rank{os.environ['RANK']}").write_text("saved\n")
        return real_save(*args, **kwargs)

    trainer.save_checkpoint = spy
    trainer.train_preferences(base, ROWS, "step-dpo", train_config(batch_size=1), out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
