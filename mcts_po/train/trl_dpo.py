"""DPO and Step-DPO through TRL's `DPOTrainer`, with EOS only after a step that ends the solution.

`mcts-po train --trainer trl` (or `train: {trainer: trl}` in a loop config) sends dpo and
step-dpo rows here instead of to our own loop in `trainer.py`. TRL's `DPOTrainer` appends EOS
to every chosen and rejected text before tokenising, which would teach the policy to stop after
an intermediate step (docs/data_formats.md, tests/test_extract_trl.py). So the rows are
tokenised here, the way our own trainer does it (`*_ends_solution` decides the EOS, the prompt
is cut from the left, never the completion), and handed to a `DPOTrainer` subclass that passes
an already tokenised dataset (`prompt_ids`, `chosen_ids`, `rejected_ids`) through unchanged.
Everything else — the sigmoid loss, label smoothing, the optimiser, schedules, gradient
accumulation, `accelerate launch` data parallelism — is TRL's. `sft_weight` becomes TRL's
`loss_type=["sigmoid", "sft"]` with `loss_weights=[1, sft_weight]` (RPO; TRL averages the NLL
over all chosen tokens of the batch, our own trainer per sequence).

    from mcts_po.train.trl_dpo import train_with_trl
    train_with_trl("smollm2-135m", rows, "step-dpo", TrainConfig(trainer="trl", max_steps=10), "ckpt/1")
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from mcts_po.io_utils import UserError, common_prefix_length
from mcts_po.progress import bars_enabled
from mcts_po.train.logprobs import tokenize_completion

TRL_METHODS = ("dpo", "step-dpo")
TOKENISED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def tokenise_pair(tokenizer: Any, prompt: str, chosen: str, rejected: str, chosen_eos: bool, rejected_eos: bool,
                  max_length: int, index: int = 0) -> dict[str, list[int]]:
    """One row as TRL's tokenised preference example: `prompt_ids`, `chosen_ids`, `rejected_ids`.

    prompt + completion are tokenised together (the tokens the model sees); the prompt part is
    the tokens both joined sequences share that end inside the prompt. EOS ends a completion
    only where its flag says the step finishes the solution. When the longer side exceeds
    `max_length`, prompt tokens are dropped from the left (at least one is kept); a completion
    that cannot fit raises ValueError naming the example.
    """
    sides = []
    for completion, with_eos in ((chosen, chosen_eos), (rejected, rejected_eos)):
        token_ids, step_of_token = tokenize_completion(tokenizer, prompt, [completion], with_eos, max_length, index)
        sides.append((token_ids, sum(1 for step in step_of_token if step < 0)))
    (chosen_ids, chosen_prompt), (rejected_ids, rejected_prompt) = sides
    prompt_length = min(chosen_prompt, rejected_prompt, common_prefix_length(chosen_ids, rejected_ids))
    if prompt_length == 0:
        raise ValueError(f"example {index}: the prompt tokenised to nothing before the completions")
    prompt_ids = chosen_ids[:prompt_length]
    chosen_ids, rejected_ids = chosen_ids[prompt_length:], rejected_ids[prompt_length:]
    longest = max(len(chosen_ids), len(rejected_ids))
    if longest + 1 > max_length:  # the shared prompt can end before either side's own prompt did
        raise ValueError(f"example {index}: a completion has {longest} tokens after the shared prompt, which with one "
                         f"prompt token exceeds max_length={max_length}; completions are never truncated")
    cut = max(0, prompt_length + longest - max_length)
    return {"prompt_ids": prompt_ids[cut:], "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def tokenised_pair_dataset(tokenizer: Any, examples: Sequence[Any], max_length: int) -> Any:
    """A `datasets.Dataset` of TRL's tokenised preference columns from `PairExample`s."""
    from datasets import Dataset

    return Dataset.from_list([
        tokenise_pair(tokenizer, e.prompt, e.chosen, e.rejected, e.chosen_eos, e.rejected_eos, max_length, index)
        for index, e in enumerate(examples)
    ])


def pretokenised_dpo_trainer_class() -> type:
    """`DPOTrainer` that leaves a dataset which already has TRL's token columns as it is."""
    from trl import DPOTrainer

    class PretokenisedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if set(TOKENISED_COLUMNS) <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PretokenisedDPOTrainer


def total_optimizer_steps(num_examples: int, config: Any) -> int:
    """Our trainer's step count: all epochs of micro-batches, capped by `max_steps` (TRL's own
    `max_steps` would instead run past the epochs, cycling the data)."""
    batches_per_epoch = math.ceil(num_examples / config.batch_size)
    steps = math.ceil(batches_per_epoch * config.num_epochs / config.gradient_accumulation_steps)
    return min(steps, config.max_steps) if config.max_steps else steps


def history_from_trl(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """TRL's per-step log entries -> our training_log `history` records (same keys as our trainer)."""
    history = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue  # the final train summary has train_loss, not loss
        record = {"step": int(entry["step"]), "loss": float(entry["loss"]),
                  "grad_norm": float(entry.get("grad_norm", float("nan"))), "lr": float(entry.get("learning_rate", 0.0))}
        if "rewards/margins" in entry:
            record["reward_margin"] = float(entry["rewards/margins"])
        if "rewards/accuracies" in entry:
            record["reward_accuracy"] = float(entry["rewards/accuracies"])
        history.append(record)
    return history


def train_with_trl(model_path: str, rows: Sequence[dict[str, Any]], method: str, config: Any,
                   output_dir: str | Path) -> Path:
    """Train `model_path` on dpo/step-dpo `rows` with TRL's DPOTrainer; save like `train_preferences`."""
    import torch
    from trl import DPOConfig

    from mcts_po.train import checkpoints
    from mcts_po.train.examples import pair_examples_from_rows

    if method not in TRL_METHODS:
        raise UserError(f"--trainer trl trains {', '.join(TRL_METHODS)}; {method} needs our trainer (--trainer mcts_po)")
    if config.conservative:
        raise UserError("conservative DPO sets the label smoothing per pair, which TRL's DPOTrainer cannot: "
                        "use --trainer mcts_po, or a fixed --label-smoothing")
    examples = pair_examples_from_rows(rows, method, config)
    if not examples:
        raise UserError(f"no {method} training examples in {len(rows)} rows")
    started = time.monotonic()
    device = checkpoints.resolve_device(config.device)
    config, precision = checkpoints.resolve_precision(config, device)
    torch.manual_seed(config.seed)
    tokenizer = checkpoints.load_tokenizer(model_path)
    try:
        dataset = tokenised_pair_dataset(tokenizer, examples, config.max_length)
    except ValueError as error:
        raise UserError(str(error)) from None
    policy = checkpoints.load_causal_lm(model_path, device)
    reference = checkpoints.load_causal_lm(config.ref_model, device) if config.ref_model else copy.deepcopy(policy)
    reference.eval().requires_grad_(False)
    if config.lora:
        policy = checkpoints.add_lora(policy, config)
    loss_types, loss_weights = ["sigmoid"], [1.0]
    if config.sft_weight:
        loss_types.append("sft")
        loss_weights.append(config.sft_weight)
    with tempfile.TemporaryDirectory(prefix="mcts_po_trl_") as scratch:
        args = DPOConfig(
            output_dir=scratch, beta=config.beta_for(method), label_smoothing=config.label_smoothing,
            loss_type=loss_types, loss_weights=loss_weights,
            learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
            max_grad_norm=config.max_grad_norm,  # 0 = no clipping, as in our trainer
            max_steps=total_optimizer_steps(len(examples), config),
            per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
            lr_scheduler_type="constant_with_warmup", optim="adamw_torch",
            max_length=None,  # truncated above, prompt from the left
            bf16=config.bf16 == "true", use_cpu=device.type == "cpu", gradient_checkpointing=False,
            seed=config.seed, data_seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
            disable_tqdm=not bars_enabled(config.progress), remove_unused_columns=False,
        )
        trainer = pretokenised_dpo_trainer_class()(model=policy, ref_model=reference, args=args,
                                                    train_dataset=dataset, processing_class=tokenizer)
        if not config.progress:  # without its bar, the Trainer prints every step's log dict instead
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = history_from_trl(trainer.state.log_history)
        steps = trainer.state.global_step
        is_main = trainer.accelerator.is_main_process
        policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.eval()
    log = checkpoints.training_log(method, model_path, config, len(examples), len(rows), steps, started, device, history,
                            trainer="trl", precision=precision)
    if is_main:
        checkpoints.save_checkpoint(policy, tokenizer, Path(output_dir), config, log)
    return Path(output_dir)
