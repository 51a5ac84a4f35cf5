"""Tests for mcts_po.train.trl_dpo: dpo/step-dpo through TRL's DPOTrainer with our EOS rule.

The tiny random Llama and rows come from tests/test_trainer.py (character-level tokenizer, so
token counts are character counts). The SmolLM2 run is in test_trainer.py, parametrised by trainer.

    PYTHONPATH=. .venv/bin/pytest tests/test_trl_dpo.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from mcts_po.io_utils import UserError
from mcts_po.train.checkpoints import load_causal_lm, load_tokenizer
from mcts_po.train.config import TrainConfig
from mcts_po.train.trainer import train_preferences
from mcts_po.train.trl_dpo import history_from_trl, tokenise_pair, total_optimizer_steps
from test_trainer import STEP_ROWS, TPO_ROWS, save_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "base")
    return folder, load_tokenizer(folder)


def decode(tokenizer, ids):
    """The text of `ids`, EOS as "<eos>" (the character-level decoder would put spaces between tokens)."""
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def test_eos_ends_only_a_finishing_step_and_the_prompt_is_shared(tiny):
    _, tokenizer = tiny
    eos = tokenizer.eos_token_id
    step = tokenise_pair(tokenizer, "q 2+3?\n\n", "2+3=5\n", "2+3=6\n", False, False, 64)
    assert decode(tokenizer, step["prompt_ids"]) == "q 2+3?\n\n"
    assert decode(tokenizer, step["chosen_ids"]) == "2+3=5\n" and eos not in step["chosen_ids"]
    assert decode(tokenizer, step["rejected_ids"]) == "2+3=6\n" and eos not in step["rejected_ids"]
    final = tokenise_pair(tokenizer, "q 2+3?\n\n", "so 5.", "so 7.", True, False, 64)
    assert final["chosen_ids"][-1] == eos and final["rejected_ids"][-1] != eos


def test_a_long_prompt_is_cut_from_the_left_and_a_long_completion_is_refused(tiny):
    _, tokenizer = tiny
    cut = tokenise_pair(tokenizer, "abcdefgh", "xyz", "x", False, True, max_length=6)  # longest side: 3 tokens
    assert decode(tokenizer, cut["prompt_ids"]) == "fgh" and decode(tokenizer, cut["chosen_ids"]) == "xyz"
    with pytest.raises(ValueError, match="example 7: the completion has 6 tokens"):
        tokenise_pair(tokenizer, "q", "abcdef", "x", False, False, max_length=6, index=7)


def test_trl_and_our_trainer_take_the_same_first_steps(tiny, tmp_path):
    base, _ = tiny
    weights = {}
    for trainer in ("mcts_po", "trl"):
        config = TrainConfig(trainer=trainer, learning_rate=1e-3, num_epochs=2, max_steps=2, batch_size=3,
                             max_length=64, progress=False, device="cpu", bf16=False)
        out = train_preferences(base, STEP_ROWS, "step-dpo", config, tmp_path / trainer)
        weights[trainer] = load_causal_lm(str(out), torch.device("cpu")).state_dict()
        log = json.loads((out / "training_log.json").read_text())
        assert log["optimizer_steps"] == 2 and log["history"][0]["reward_margin"] == 0.0
        assert log["history"][1]["reward_margin"] > 0
    initial = load_causal_lm(base, torch.device("cpu")).state_dict()
    moved = max((weights["mcts_po"][k] - initial[k]).abs().max().item() for k in initial)
    differ = max((weights["mcts_po"][k] - weights["trl"][k]).abs().max().item() for k in initial)
    assert moved > 1e-3 and differ < moved / 100, (moved, differ)  # same loss, same EOS rule, same AdamW steps


def test_methods_and_options_trl_cannot_train_are_refused(tiny, tmp_path):
    base, _ = tiny
    with pytest.raises(UserError, match="step-apo needs our trainer"):
        train_preferences(base, STEP_ROWS, "step-apo", TrainConfig(trainer="trl"), tmp_path / "x")
    with pytest.raises(UserError, match="tpo needs our trainer"):
        train_preferences(base, TPO_ROWS, "tpo", TrainConfig(trainer="trl"), tmp_path / "x")
    with pytest.raises(UserError, match="conservative DPO sets the label smoothing per pair"):
        train_preferences(base, STEP_ROWS, "step-dpo", TrainConfig(trainer="trl", conservative=True), tmp_path / "x")
    with pytest.raises(ValueError, match="TrainConfig.trainer"):
        TrainConfig(trainer="deepspeed")


def test_the_step_count_follows_ours_epochs_capped_by_max_steps():
    assert total_optimizer_steps(3, TrainConfig(batch_size=3, num_epochs=1, max_steps=4)) == 1  # TRL alone: 4
    assert total_optimizer_steps(7, TrainConfig(batch_size=2, num_epochs=3)) == 12
    assert total_optimizer_steps(7, TrainConfig(batch_size=2, num_epochs=3, gradient_accumulation_steps=5)) == 3
    assert total_optimizer_steps(7, TrainConfig(batch_size=2, num_epochs=3, max_steps=5)) == 5


def test_trl_log_entries_become_our_history_records():
    history = history_from_trl([
        {"loss": 0.69, "grad_norm": 1.5, "learning_rate": 1e-5, "rewards/margins": 0.0, "rewards/accuracies": 0.0, "step": 1},
        {"loss": 0.5, "learning_rate": 1e-5, "rewards/margins": 0.3, "step": 2},
        {"train_loss": 0.6, "step": 2},
    ])
    assert [r["step"] for r in history] == [1, 2]
    assert history[0] == {"step": 1, "loss": 0.69, "grad_norm": 1.5, "lr": 1e-5, "reward_margin": 0.0, "reward_accuracy": 0.0}
    assert history[1]["reward_margin"] == 0.3 and "reward_accuracy" not in history[1]
