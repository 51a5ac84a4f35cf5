"""Extracted `step-dpo` rows feed TRL's DPOTrainer: one real training step on SmolLM2-135M (CPU).

A plausible hand-built search tree (GSM8K-style, the model's own chat prompt as `tree.prompt`)
is turned into step-dpo rows, and every row, provenance columns included, goes straight
into `trl.DPOTrainer` for one optimisation step. Checked: the trainer kept every row; the
tokenised prompt is the rendered question + prefix steps; TRL appended EOS to an
intermediate step (the trap the `*_ends_solution` columns exist for); the first logged
loss is ln 2 (policy == reference at step 0); the parameters moved.

Uses the real SmolLM2-135M-Instruct (`mcts_po.models.resolve_model("smollm2-135m")`); if it
cannot be resolved, or with MCTS_PO_TEST_TINY_MODEL=1, a tiny random Llama with a byte-level
tokenizer built offline stands in.

    PYTHONPATH=. .venv/bin/pytest tests/test_extract_trl.py -q -m slow
"""

from __future__ import annotations

import math
import os

import pytest

from mcts_po.extract import extract_rows
from mcts_po.search.tree import Tree
from tiny_model import byte_level_tokenizer, save_tiny_llama

pytestmark = pytest.mark.slow

QUESTION = ("Tom has 3 boxes with 4 apples in each box. He eats 2 apples. "
            "How many apples does he have left?")


def build_tree(prompt: str) -> Tree:
    """Two first steps, the better one expanded twice more; Q values as a search leaves them."""
    t = Tree.new(problem_id="apples", tree_id="apples-0", question=QUESTION, gold_answer="10", task="gsm8k",
                 prompt=prompt, model="smollm2-135m")
    t.root.q, t.root.visits = 0.2, 10

    def add(parent, text, q, visits, **kw):
        return t.add_child(parent, text=text, q=q, visits=visits, value_sum=q * visits, **kw).node_id

    good = add(0, "Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.", 0.6, 6)
    add(0, "Tom has 3 + 4 = 7 apples.", -0.7, 3)
    eats = add(good, "He eats 2 apples, so 12 - 2 = 10 apples are left.", 0.9, 4)
    add(good, "He eats 2 apples, so 12 + 2 = 14 apples are left.", -0.8, 2)
    add(eats, "The answer is 10.", 1.0, 3, terminal=True, terminal_reason="answer", correct=True, answer="10")
    add(eats, "The answer is 12.", -1.0, 1, terminal=True, terminal_reason="answer", correct=False, answer="12")
    return t


def tiny_model_and_tokenizer(tmp_path):
    """A 2-layer random Llama and a byte-level tokenizer, built without any download."""
    tokenizer = byte_level_tokenizer()
    return save_tiny_llama(tmp_path / "tiny-llama", tokenizer), tokenizer


def model_folder_and_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    if not os.environ.get("MCTS_PO_TEST_TINY_MODEL"):
        try:
            from mcts_po.models import resolve_model

            folder = resolve_model("smollm2-135m")
            return folder, AutoTokenizer.from_pretrained(folder), "smollm2-135m"
        except Exception as exc:  # no package / conversion failed: the tiny stand-in still tests the data path
            print(f"SmolLM2 unavailable ({type(exc).__name__}: {exc}); using a tiny random Llama")
    folder, tokenizer = tiny_model_and_tokenizer(tmp_path)
    return folder, tokenizer, "tiny-llama"


def test_step_dpo_rows_train_one_dpo_step(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    folder, tokenizer, kind = model_folder_and_tokenizer(tmp_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    rows = extract_rows([build_tree(prompt)], "step-dpo")
    assert [(r["parent_id"], r["chosen_id"], r["rejected_id"]) for r in rows] == [(0, 1, 2), (1, 3, 4), (3, 5, 6)]
    assert [r["chosen_ends_solution"] for r in rows] == [False, False, True]

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ref_before = {name: p.detach().clone() for name, p in ref_model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-4,
        beta=0.1, max_length=512, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
        logging_steps=1, save_strategy="no", seed=0, data_seed=0,
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)

    # every row survived preparation; the prompt is the rendered question + prefix steps
    prepared = trainer.train_dataset
    assert len(prepared) == len(rows) == 3
    assert tokenizer.decode(prepared[1]["prompt_ids"]) + tokenizer.decode(prepared[1]["chosen_ids"]) == \
        rows[1]["prompt"] + rows[1]["chosen"] + tokenizer.eos_token
    # the trap: TRL ends an intermediate step with EOS too (rows[0] is not the end of a solution)
    assert prepared[0]["chosen_ids"][-1] == tokenizer.eos_token_id and rows[0]["chosen_ends_solution"] is False

    result = trainer.train()
    assert trainer.state.global_step == 1
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and math.isfinite(losses[0])
    # before the update the policy equals the reference: -log sigmoid(0) = ln 2
    assert losses[0] == pytest.approx(math.log(2), abs=2e-3), (kind, losses)
    assert math.isfinite(result.training_loss)
    moved = sum(1 for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name]))
    assert moved > 0, "one DPO step must change the policy's parameters"
    # the reference model is left alone
    assert all(torch.equal(p.detach(), ref_before[name]) for name, p in ref_model.named_parameters())
