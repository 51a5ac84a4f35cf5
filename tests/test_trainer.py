"""Tests for mcts_po.train.trainer: rows -> examples, and short training runs that must move
log-probabilities the intended way.

Fast tests train a tiny random Llama saved with a character-level tokenizer to a temp folder;
the slow test trains SmolLM2-135M (`resolve_model("smollm2-135m")`) for a few Step-DPO steps.

    PYTHONPATH=. .venv/bin/pytest tests/test_trainer.py -q            # fast + slow
    PYTHONPATH=. .venv/bin/pytest tests/test_trainer.py -q -m "not slow"
"""

from __future__ import annotations

import json

import pytest
import torch

from mcts_po.config_utils import build_dataclass
from mcts_po.io_utils import UserError
from mcts_po.train.checkpoints import load_causal_lm, load_tokenizer
from mcts_po.train.config import TrainConfig
from mcts_po.train.examples import list_examples_from_rows, pair_examples_from_rows, spread_indices, step_completion
from mcts_po.train.trainer import pair_log_ratio_margins, pair_sequence_logprobs, train_preferences


def save_tiny_model(folder) -> str:
    """A 2-layer random Llama + a character-level BPE tokenizer, saved as an HF folder."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<eos>": 0}
    for character in "abcdefghijklmnopqrstuvwxyz0123456789 .\n=+?":
        vocab[character] = len(vocab)
    merges = [("\n", "\n")]
    vocab["\n\n"] = len(vocab)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=merges)),
                                        eos_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         eos_token_id=0, bos_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


STEP_ROWS = [
    {"prompt": "q 2+3?\n\n", "chosen": "2+3=5", "rejected": "2+3=6", "chosen_ends_solution": False,
     "rejected_ends_solution": False, "step_delimiter": "\n", "q_chosen": 0.8, "q_rejected": -0.6, "visits_chosen": 6, "visits_rejected": 2},
    {"prompt": "q 2+3?\n\n2+3=5\n\n", "chosen": "so 5.", "rejected": "so 7.", "chosen_ends_solution": True,
     "rejected_ends_solution": True, "q_chosen": 1.0, "q_rejected": -1.0, "visits_chosen": 4, "visits_rejected": 1},
    {"prompt": "q 4+1?\n\n", "chosen": "4+1=5", "rejected": "4+1=3", "chosen_ends_solution": False,
     "rejected_ends_solution": False, "step_delimiter": "\n", "q_chosen": 0.5, "q_rejected": -0.5, "visits_chosen": 3, "visits_rejected": 3},
]

TPO_ROWS = [
    {"prompt": "q 2+3?\n\n",
     "steps": [["2+3=5", "so 5."], ["2+3=5", "so 6."], ["2+3=7", "so 7."]],
     "values": [1.0, -0.5, -1.0], "step_delimiter": "\n"},
]


def test_step_completion_adds_the_delimiter_only_to_intermediate_steps():
    assert step_completion("a=1", False, "\n\n") == "a=1\n\n"
    assert step_completion("a=1\n\n", False, "\n\n") == "a=1\n\n"
    assert step_completion("so 1.", True, "\n\n") == "so 1."


def test_pair_rows_become_examples_with_eos_only_after_finishing_steps():
    examples = pair_examples_from_rows(STEP_ROWS, "step-apo", TrainConfig(conservative=True))
    assert examples[0].chosen == "2+3=5\n" and not examples[0].chosen_eos
    assert examples[1].chosen == "so 5." and examples[1].chosen_eos
    assert (examples[0].q_chosen, examples[0].q_rejected) == (0.8, -0.6)
    assert (examples[0].visits_chosen, examples[0].visits_rejected) == (6.0, 2.0)
    plain = pair_examples_from_rows([{"prompt": "p", "chosen": "a", "rejected": "b"}], "dpo", TrainConfig())
    assert plain[0].chosen_eos and plain[0].rejected_eos  # whole completions without flags get EOS


def test_missing_columns_name_the_row():
    with pytest.raises(UserError, match=r"row 1: missing column 'q_chosen'"):
        pair_examples_from_rows([STEP_ROWS[0], {"prompt": "p", "chosen": "a", "rejected": "b"}], "step-apo", TrainConfig())


def test_tpo_rows_keep_best_worst_and_spread_and_carry_adaptive_weights():
    assert spread_indices(7, 4) == [0, 2, 4, 6]
    assert spread_indices(3, 4) == [0, 1, 2]
    row = {"prompt": "p\n\n", "steps": [["a", "c"], ["b"], ["a", "d"], ["e"], ["f"]], "values": [0.2, 1.0, -1.0, 0.0, -0.5],
           "step_delimiter": "\n"}
    (example,) = list_examples_from_rows([row], TrainConfig(max_list_size=3))
    assert example.values == (1.0, 0.0, -1.0)
    assert example.segments == (("b",), ("e",), ("a\n", "d"))
    assert example.step_weights == ((1.0,), (1.0,), (1.0, 1.0))  # nothing shared with the kept better ones
    (full,) = list_examples_from_rows([row], TrainConfig(max_list_size=5))
    # "a, d" (value -1) shares step "a" with "a, c" (value 0.2), one of its 4 better responses.
    assert full.step_weights[-1] == pytest.approx((0.75 * 2 / 1.75, 1.0 * 2 / 1.75))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="TrainConfig.device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="TrainConfig.label_smoothing"):
        TrainConfig(label_smoothing=0.7)
    with pytest.raises(ValueError, match="TrainConfig.sft_weight"):
        TrainConfig(sft_weight=-0.1)
    with pytest.raises(UserError, match="x.yaml: unknown option 'lr' for TrainConfig"):
        build_dataclass(TrainConfig, {"lr": 1.0}, None, "x.yaml")


@pytest.mark.parametrize("method, extra", [
    ("step-dpo", {}),
    ("dpo", {"conservative": True}),
    ("step-apo", {}),
])
def test_a_few_steps_raise_the_chosen_minus_rejected_log_ratio(tmp_path, method, extra):
    base = save_tiny_model(tmp_path / "base")
    config = TrainConfig(learning_rate=1e-2, num_epochs=5, max_steps=3, batch_size=3, max_length=64, progress=False,
                         device="cpu", **extra)
    out = train_preferences(base, STEP_ROWS, method, config, tmp_path / "trained")
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    log = json.loads((out / "training_log.json").read_text())
    assert log["optimizer_steps"] == 3 and log["method"] == method
    from mcts_po.precision import choose_bf16

    use_bf16, reason = choose_bf16("auto", "cpu")  # the default "auto", resolved for this processor and logged
    assert log["config"]["bf16"] == ("true" if use_bf16 else "false") and log["precision"] == reason
    assert log["history"][0]["reward_margin"] == 0.0  # policy == reference at the first step
    margins = pair_log_ratio_margins(str(out), base, STEP_ROWS, TrainConfig(device="cpu"))
    assert len(margins) == 3
    assert all(m > 0 for m in margins), margins
    before = pair_log_ratio_margins(base, base, STEP_ROWS, TrainConfig(device="cpu"))
    assert before == [0.0, 0.0, 0.0]


def test_tpo_training_orders_the_list_and_lora_merges(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "base")
    config = TrainConfig(learning_rate=2e-2, num_epochs=6, max_steps=6, batch_size=1, max_length=64, progress=False,
                         device="cpu", lora=True, lora_r=4, lora_alpha=8, sft_weight=2.0)
    out = train_preferences(base, TPO_ROWS, "tpo", config, tmp_path / "trained")
    assert "tpo trains without it" in capsys.readouterr().err  # a pair-method option set by hand, said aloud (the default 1.0 is not)
    log = json.loads((out / "training_log.json").read_text())
    assert log["history"][-1]["loss"] < log["history"][0]["loss"]
    assert not any(p.name.startswith("adapter") for p in out.iterdir())  # merged, plain folder
    # Sequence log-ratios of the three responses, in value order, measured as pairs.
    prompt = TPO_ROWS[0]["prompt"]
    texts = ["2+3=5\n\nso 5.", "2+3=5\n\nso 6.", "2+3=7\n\nso 7."]
    pairs = [{"prompt": prompt, "chosen": texts[i], "rejected": texts[j]} for i, j in [(0, 1), (1, 2), (0, 2)]]
    margins = pair_log_ratio_margins(str(out), base, pairs, TrainConfig(device="cpu"))
    assert all(m > 0 for m in margins), margins


def test_unknown_method_and_misplaced_options_are_refused(tmp_path):
    with pytest.raises(UserError, match="unknown training method 'ppo'"):
        train_preferences("unused", STEP_ROWS, "ppo", TrainConfig(), tmp_path / "x")
    with pytest.raises(UserError, match="conservative .* applies to dpo/step-dpo, not step-apo"):
        train_preferences("unused", STEP_ROWS, "step-apo", TrainConfig(conservative=True), tmp_path / "x")


def chosen_logprobs(model_dir: str, rows: list[dict]) -> list[float]:
    """Summed log-probs of each row's chosen completion under the model in `model_dir`."""
    config = TrainConfig(device="cpu")
    examples = pair_examples_from_rows(rows, "step-dpo", config)
    model, tokenizer = load_causal_lm(model_dir, torch.device("cpu")).eval(), load_tokenizer(model_dir)
    with torch.no_grad():
        chosen, _, _ = pair_sequence_logprobs(model, tokenizer, examples, config, torch.device("cpu"))
    return chosen.tolist()


def test_sft_weight_raises_the_chosen_steps_likelihood_beyond_plain_step_dpo(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    runs = {}
    for weight in (0.0, 2.0):
        config = TrainConfig(learning_rate=1e-2, num_epochs=5, max_steps=5, batch_size=3, max_length=64, progress=False,
                             device="cpu", sft_weight=weight)
        runs[weight] = train_preferences(base, STEP_ROWS, "step-dpo", config, tmp_path / f"trained-{weight}")
    before = chosen_logprobs(base, STEP_ROWS)
    plain, with_nll = chosen_logprobs(str(runs[0.0]), STEP_ROWS), chosen_logprobs(str(runs[2.0]), STEP_ROWS)
    assert sum(with_nll) > sum(before) and sum(with_nll) > sum(plain), (before, plain, with_nll)
    log = json.loads((runs[2.0] / "training_log.json").read_text())
    assert log["history"][-1]["chosen_nll"] < log["history"][0]["chosen_nll"]
    assert all(m > 0 for m in pair_log_ratio_margins(str(runs[2.0]), base, STEP_ROWS, TrainConfig(device="cpu")))


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["mcts_po", "trl"])
def test_step_dpo_on_smollm2_raises_the_log_ratio_margin_of_its_rows(tmp_path, trainer):
    from mcts_po.models import resolve_model

    base = resolve_model("smollm2-135m")
    rows = [
        {"prompt": "<|im_start|>user\nTom has 3 apples and buys 4 more. How many apples does he have?<|im_end|>\n"
                   "<|im_start|>assistant\n",
         "chosen": "Tom starts with 3 apples and buys 4, so he has 3 + 4 = 7 apples.",
         "rejected": "Tom starts with 3 apples and buys 4, so he has 3 + 4 = 8 apples.",
         "chosen_ends_solution": False, "rejected_ends_solution": False, "step_delimiter": "\n"},
        {"prompt": "<|im_start|>user\nTom has 3 apples and buys 4 more. How many apples does he have?<|im_end|>\n"
                   "<|im_start|>assistant\nTom starts with 3 apples and buys 4, so he has 3 + 4 = 7 apples.\n\n",
         "chosen": "The answer is 7.", "rejected": "The answer is 12.",
         "chosen_ends_solution": True, "rejected_ends_solution": True},
        {"prompt": "<|im_start|>user\nA box holds 5 pens. How many pens are in 2 boxes?<|im_end|>\n"
                   "<|im_start|>assistant\n",
         "chosen": "Each box holds 5 pens, so 2 boxes hold 2 * 5 = 10 pens.",
         "rejected": "Each box holds 5 pens, so 2 boxes hold 5 + 2 = 7 pens.",
         "chosen_ends_solution": False, "rejected_ends_solution": False, "step_delimiter": "\n"},
    ]
    config = TrainConfig(learning_rate=1e-5, num_epochs=4, max_steps=4, batch_size=3, max_length=128, progress=False,
                         device="cpu", trainer=trainer)
    out = train_preferences(base, rows, "step-dpo", config, tmp_path / "policy-1")
    log = json.loads((out / "training_log.json").read_text())
    assert log["optimizer_steps"] == 4 and log["precision"].startswith("auto: ")
    margins = pair_log_ratio_margins(str(out), base, rows, TrainConfig(device="cpu"))
    assert sum(margins) / len(margins) > 0.1, margins
    assert all(m > 0 for m in margins), margins


# ---------------------------------------------------------------- sft (the loop's rft baseline)


def test_sft_nll_loss_is_the_token_mean_negative_log_likelihood():
    from mcts_po.train.losses import sft_nll_loss

    loss = sft_nll_loss(torch.tensor([-2.0, -6.0]), torch.tensor([1, 3]))
    assert loss.item() == pytest.approx(8.0 / 4.0)
    with pytest.raises(ValueError, match="at least one token"):
        sft_nll_loss(torch.tensor([-1.0]), torch.tensor([0]))


SFT_ROWS = [{"prompt": "q 2+3?\n\n", "completion": "2+3=5\n\nso 5."},
            {"prompt": "q 4+1?\n\n", "completion": "4+1=5\n\nso 5."}]


def test_sft_training_raises_the_completion_log_likelihood(tmp_path, capsys):
    from mcts_po.train.logprobs import build_pair_batch, sequence_logprobs

    base = save_tiny_model(tmp_path / "base")
    config = TrainConfig(learning_rate=1e-2, num_epochs=3, batch_size=2, max_length=64, progress=False, device="cpu",
                         sft_weight=0.5)
    out = train_preferences(base, SFT_ROWS, "sft", config, tmp_path / "trained")
    assert "sft trains without it" in capsys.readouterr().err
    log = json.loads((out / "training_log.json").read_text())
    assert log["method"] == "sft" and log["optimizer_steps"] == 3
    assert "reward_margin" not in log["history"][0] and log["history"][0]["chosen_nll"] == pytest.approx(log["history"][0]["loss"])

    def completion_logps(folder):
        model, tokenizer = load_causal_lm(folder, torch.device("cpu")), load_tokenizer(folder)
        batch = build_pair_batch(tokenizer, [r["prompt"] for r in SFT_ROWS], [r["completion"] for r in SFT_ROWS],
                                 [True, True], 64)
        with torch.no_grad():
            return sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask).tolist()

    before, after = completion_logps(base), completion_logps(str(out))
    assert all(a > b + 1.0 for a, b in zip(after, before)), (before, after)
    # the first step's loss is the initial policy's token-mean NLL of the rows (batch of both rows)
    tokens = sum(len(load_tokenizer(base)(r["completion"])["input_ids"]) + 1 for r in SFT_ROWS)
    assert log["history"][0]["loss"] == pytest.approx(-sum(before) / tokens, rel=2e-2)


def test_sft_rows_need_a_completion_column(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    with pytest.raises(UserError, match="row 0: missing column 'completion'"):
        train_preferences(base, [{"prompt": "q"}], "sft", TrainConfig(device="cpu", progress=False), tmp_path / "t")
