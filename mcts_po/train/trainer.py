"""A small preference-training loop: DPO, Step-DPO, Step-APO, TPO (and plain SFT) on extracted rows.

`train_preferences(model_path, rows, method, config, output_dir)` loads the policy and a
frozen reference (a copy of the initial policy, or `config.ref_model`), turns the rows into
token batches (`mcts_po.train.logprobs`), optimises the method's loss
(`mcts_po.train.losses`) with AdamW, gradient accumulation and gradient clipping, under bf16
autocast on CPU or GPU, optionally through LoRA (peft; merged into the weights before
saving), shows a tqdm bar, and saves a plain HF folder (`save_pretrained` + tokenizer +
`training_log.json`) atomically. It returns that folder.

Rows (the columns `mcts-po extract` writes; see docs/losses.md):
- dpo / step-dpo / step-apo: `prompt`, `chosen`, `rejected`; `chosen_ends_solution` /
  `rejected_ends_solution` (EOS only after a step that ends the solution; an intermediate
  step gets the step delimiter instead; rows without the flags are whole completions and get
  EOS); step-apo also `q_chosen`, `q_rejected`; `conservative=True` reads `visits_chosen`,
  `visits_rejected`.
- tpo: `prompt`, `steps` (one list of step texts per response), `values` (one per
  response); optional `ends_solution` (one bool per response, default True).
- sft: `prompt`, `completion` (the `sft` extraction's rows); the loss is the per-token NLL of
  the completion followed by EOS; no reference model is loaded.

    from mcts_po.train.config import TrainConfig; from mcts_po.train.trainer import train_preferences
    out = train_preferences("smollm2-135m", rows, "step-dpo", TrainConfig(max_steps=20), "runs/x/policy-1")

Weights are saved in float32 by default: a few small updates would round away in bf16.

Several processes: under `accelerate launch` (DDP, FSDP or DeepSpeed ZeRO-3 from its config file;
configs/accelerate/) or `torchrun --nproc_per_node N`, each process takes every N-th micro-batch,
accelerate's `Accelerator.prepare` wraps the policy and optimizer (DDP: nccl on GPU, one GPU per
process; gloo on CPU), gradients are averaged over ranks, and rank 0 alone saves. The global batch is
batch_size x gradient_accumulation_steps x N. training_log.json records which examples each rank
trained on and, under DDP, a fingerprint of each rank's final weights (docs/scale_out_training.md).
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch

from mcts_po.io_utils import UserError
from mcts_po.precision import normalize_bf16_choice
from mcts_po.train.checkpoints import (
    add_lora,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    resolve_precision,
    save_checkpoint,
    training_log,
)
from mcts_po.train.config import TrainConfig
from mcts_po.train.distributed import (
    data_parallel_from_env,
    end_accelerator,
    make_accelerator,
    needs_accelerator,
    rank_batches,
    sharded_engine,
    weights_fingerprint,
)
from mcts_po.train.examples import (
    ListExample,
    PairExample,
    SftExample,
    check_method,
    list_examples_from_rows,
    pair_examples_from_rows,
    sft_examples_from_rows,
)
from mcts_po.train.logprobs import build_pair_batch, build_step_batch, sequence_logprobs, step_logprobs
from mcts_po.train.losses import (
    PreferenceLoss,
    conservative_label_smoothing,
    dpo_loss,
    sft_nll_loss,
    step_apo_loss,
    tpo_listwise_loss,
    with_chosen_nll,
)

DEFAULT_SFT_WEIGHT = TrainConfig.__dataclass_fields__["sft_weight"].default  # 1.0 (RPO on: docs/losses.md)


# ---------------------------------------------------------------- losses on a micro-batch


def autocast_context(device: torch.device, bf16: str):
    """bf16 autocast when `bf16` (a resolved TrainConfig.bf16: 'true'/'false') says so."""
    if normalize_bf16_choice(bf16) != "true":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def pair_sequence_logprobs(model: Any, tokenizer: Any, examples: Sequence[PairExample], config: TrainConfig,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed completion log-probs, Tensor[B] each, in one forward pass, and the
    chosen completions' token counts (Tensor[B], after truncation to max_length)."""
    batch = build_pair_batch(
        tokenizer,
        [e.prompt for e in examples] * 2,
        [e.chosen for e in examples] + [e.rejected for e in examples],
        [e.chosen_eos for e in examples] + [e.rejected_eos for e in examples],
        config.max_length,
    ).to(device)
    logps = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    chosen_token_counts = batch.completion_mask[: len(examples)].sum(dim=-1)
    return logps[: len(examples)], logps[len(examples):], chosen_token_counts


def pair_batch_loss(policy: Any, reference: Any, tokenizer: Any, examples: Sequence[PairExample], method: str,
                    config: TrainConfig, device: torch.device) -> tuple[PreferenceLoss, float]:
    """The batch's preference loss (plus `sft_weight` × the chosen NLL) and that NLL, for logging."""
    beta = config.beta_for(method)
    with autocast_context(device, config.bf16):
        policy_chosen, policy_rejected, chosen_token_counts = pair_sequence_logprobs(
            policy, tokenizer, examples, config, device)
        with torch.no_grad():
            ref_chosen, ref_rejected, _ = pair_sequence_logprobs(reference, tokenizer, examples, config, device)
    if method == "step-apo":
        q_chosen = torch.tensor([e.q_chosen for e in examples], device=device)
        q_rejected = torch.tensor([e.q_rejected for e in examples], device=device)
        out = step_apo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, q_chosen, q_rejected,
                            beta=beta, alpha=config.alpha)
    else:
        if config.conservative:
            smoothing = conservative_label_smoothing([e.visits_chosen for e in examples],
                                                     [e.visits_rejected for e in examples]).to(device)
        else:
            smoothing = config.label_smoothing
        out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=smoothing)
    out, chosen_nll = with_chosen_nll(out, policy_chosen, chosen_token_counts, config.sft_weight)
    return out, chosen_nll.item()


def sft_batch_loss(policy: Any, tokenizer: Any, examples: Sequence[SftExample], config: TrainConfig,
                   device: torch.device) -> torch.Tensor:
    """The batch's SFT loss: the per-token NLL of the completions (prompt tokens are not trained)."""
    with autocast_context(device, config.bf16):
        batch = build_pair_batch(tokenizer, [e.prompt for e in examples], [e.completion for e in examples],
                                 [True] * len(examples), config.max_length).to(device)
        logps = sequence_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_mask)
    return sft_nll_loss(logps, batch.completion_mask.sum(dim=-1))


def list_step_logprobs(model: Any, tokenizer: Any, examples: Sequence[ListExample], config: TrainConfig,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step log-probs Tensor[B, K, S] of every response of every list, and the step mask."""
    prompts, step_lists, append_eos, owners = [], [], [], []
    for list_index, example in enumerate(examples):
        for response_index, segments in enumerate(example.segments):
            prompts.append(example.prompt)
            step_lists.append(list(segments))
            append_eos.append(example.ends_solution[response_index])
            owners.append((list_index, response_index))
    batch = build_step_batch(tokenizer, prompts, step_lists, append_eos, config.max_length).to(device)
    num_steps = max(len(steps) for steps in step_lists)
    flat = step_logprobs(model, batch.input_ids, batch.attention_mask, batch.step_ids, num_steps=num_steps)
    num_responses = max(len(example.segments) for example in examples)
    per_step = torch.zeros(len(examples), num_responses, num_steps, dtype=flat.dtype, device=device)
    step_mask = torch.zeros(len(examples), num_responses, num_steps, dtype=torch.bool, device=device)
    for row, (list_index, response_index) in enumerate(owners):
        per_step[list_index, response_index] = flat[row]
        step_mask[list_index, response_index, : len(step_lists[row])] = True
    return per_step, step_mask


def list_batch_loss(policy: Any, reference: Any, tokenizer: Any, examples: Sequence[ListExample],
                    config: TrainConfig, device: torch.device) -> PreferenceLoss:
    with autocast_context(device, config.bf16):
        policy_steps, step_mask = list_step_logprobs(policy, tokenizer, examples, config, device)
        with torch.no_grad():
            ref_steps, _ = list_step_logprobs(reference, tokenizer, examples, config, device)
    shape = policy_steps.shape
    weights = torch.zeros(shape, device=device)
    values = torch.zeros(shape[:2], device=device)
    for list_index, example in enumerate(examples):
        for response_index, response_weights in enumerate(example.step_weights):
            weights[list_index, response_index, : len(response_weights)] = torch.tensor(response_weights)
            values[list_index, response_index] = example.values[response_index]
    return tpo_listwise_loss(policy_steps, ref_steps, weights, values, step_mask, beta=config.beta_for("tpo"))


def ordered_pair_fraction(rewards: torch.Tensor, examples: Sequence[ListExample]) -> float:
    """Share of value-ordered response pairs (v_i > v_j) whose rewards are ordered the same way."""
    agree = total = 0
    for list_index, example in enumerate(examples):
        for i, value_i in enumerate(example.values):
            for j, value_j in enumerate(example.values):
                if value_i > value_j:
                    total += 1
                    agree += int(rewards[list_index, i] > rewards[list_index, j])
    return agree / total if total else float("nan")

# ---------------------------------------------------------------- the loop


def micro_batches(examples: Sequence[Any], config: TrainConfig, rng: random.Random) -> list[list[Any]]:
    """All micro-batches of all epochs, in order (shuffled per epoch with `rng` when asked)."""
    batches = []
    for _ in range(config.num_epochs):
        order = list(range(len(examples)))
        if config.shuffle:
            rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batches.append([examples[i] for i in order[start : start + config.batch_size]])
    return batches


def train_preferences(
    model_path: str,
    rows: Sequence[dict[str, Any]],
    method: str,
    config: TrainConfig,
    output_dir: str | os.PathLike,
) -> Path:
    """Train `model_path` on `rows` with `method`; save to `output_dir`; return it.

    The reference is `config.ref_model` or a frozen copy of the initial policy. The saved
    folder holds the weights (LoRA merged), the tokenizer and `training_log.json` (config,
    per-step loss and reward margins, seconds). `config.trainer == "trl"` hands dpo/step-dpo to
    TRL's DPOTrainer (`mcts_po.train.trl_dpo`), with the same inputs and the same saved folder.
    """
    from mcts_po.progress import progress_bar

    check_method(method)
    if config.trainer == "trl":
        from mcts_po.train.trl_dpo import train_with_trl

        return train_with_trl(model_path, rows, method, config, output_dir)
    if config.label_smoothing and method not in ("dpo", "step-dpo"):
        raise UserError(f"label_smoothing applies to dpo/step-dpo, not {method}")
    if config.conservative and method not in ("dpo", "step-dpo"):
        raise UserError(f"conservative (visit-count label smoothing) applies to dpo/step-dpo, not {method}")
    if config.sft_weight not in (0.0, DEFAULT_SFT_WEIGHT) and method in ("tpo", "sft"):  # one loop config serves all methods
        print(f"train: sft_weight={config.sft_weight:g} applies to the pair methods dpo/step-dpo/step-apo; "
              f"{method} trains without it", file=sys.stderr)
    examples: list[Any]
    if method == "tpo":
        examples = list_examples_from_rows(rows, config)
    elif method == "sft":
        examples = sft_examples_from_rows(rows)
    else:
        examples = pair_examples_from_rows(rows, method, config)
    if not examples:
        raise UserError(f"no {method} training examples in {len(rows)} rows")
    started = time.monotonic()
    device = resolve_device(config.device)
    config, precision = resolve_precision(config, device)
    parallel = data_parallel_from_env()
    engine = sharded_engine()
    if engine and config.lora:
        raise UserError(f"lora under {engine}: merging the adapters needs the whole weights on one process; "
                        "train LoRA under DDP (configs/accelerate/ddp_one_node.yaml) or full weights under " + engine)
    if engine == "deepspeed" and config.gradient_accumulation_steps > 1:
        raise UserError("gradient_accumulation_steps > 1 under DeepSpeed: its engine steps the optimizer itself; set "
                        "train.gradient_accumulation_steps: 1 and raise batch_size or the number of processes")
    accelerator = make_accelerator(device, config.bf16 == "true", engine) if needs_accelerator(parallel) else None
    torch.manual_seed(config.seed)  # LoRA initialisation draws from the global generator
    tokenizer = load_tokenizer(model_path)
    policy = load_causal_lm(model_path, device)
    reference = None  # sft has no reference
    if method != "sft":
        reference = load_causal_lm(config.ref_model, device) if config.ref_model else copy.deepcopy(policy)
        reference.eval().requires_grad_(False)
    if config.lora:
        policy = add_lora(policy, config)
    policy.train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    forward_model = policy
    if accelerator is not None:  # DDP / FSDP / DeepSpeed: gradients are averaged over ranks in backward()
        forward_model, optimizer = accelerator.prepare(policy, optimizer)
        trainable = [p for p in forward_model.parameters() if p.requires_grad]
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)

    batches = micro_batches(examples, config, random.Random(config.seed))
    batch_index = {id(e): i for i, e in enumerate(examples)}  # for the log: which examples each rank trained on
    if parallel.world_size > 1:
        batches = rank_batches(batches, parallel)
        if not batches:
            raise UserError(f"{len(examples)} examples make fewer micro-batches than the {parallel.world_size} processes")
    accumulation = config.gradient_accumulation_steps
    total_steps = math.ceil(len(batches) / accumulation)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    history: list[dict[str, float]] = []
    bar = progress_bar(config.progress and parallel.is_main, total=total_steps, desc=f"train {method}", unit="step")
    for step in range(total_steps):
        group = batches[step * accumulation : (step + 1) * accumulation]
        optimizer.zero_grad(set_to_none=True)
        step_loss, margins, ordered, nlls = 0.0, [], [], []
        for batch in group:
            if method == "sft":
                loss = sft_batch_loss(forward_model, tokenizer, batch, config, device)
                nlls.append(loss.item())
                (loss / len(group)).backward()
                step_loss += loss.item() / len(group)
                continue
            if method == "tpo":
                out = list_batch_loss(forward_model, reference, tokenizer, batch, config, device)
                ordered.append(ordered_pair_fraction(out.chosen_rewards, batch))
            else:
                out, chosen_nll = pair_batch_loss(forward_model, reference, tokenizer, batch, method, config, device)
                nlls.append(chosen_nll)
                margins.extend((out.chosen_rewards - out.rejected_rewards).float().tolist())
            if accelerator is not None:
                accelerator.backward(out.loss / len(group))
            else:
                (out.loss / len(group)).backward()
            step_loss += out.loss.item() / len(group)
        if config.max_grad_norm <= 0:
            grad_norm = float("nan")
        elif accelerator is not None:  # FSDP / DeepSpeed clip the sharded gradients their own way
            norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)  # None: DeepSpeed clips in its step
            grad_norm = float(norm) if norm is not None else float("nan")
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm).item()
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "loss": step_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
        if margins:
            record["reward_margin"] = sum(margins) / len(margins)
            record["reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        if nlls:
            record["chosen_nll"] = sum(nlls) / len(nlls)
        if ordered:
            record["ordered_pair_fraction"] = sum(ordered) / len(ordered)
        history.append(record)
        bar.set_postfix(loss=f"{step_loss:.4f}", **({"margin": f"{record['reward_margin']:.3f}"} if margins else {}))
        bar.update(1)
    bar.close()
    policy.eval()
    if accelerator is None:
        log = training_log(method, model_path, config, len(examples), len(rows), total_steps, started, device, history,
                           world_size=1, precision=precision)
        return save_checkpoint(policy, tokenizer, Path(output_dir), config, log)
    used = [[batch_index[id(e)] for batch in batches[: total_steps * accumulation] for e in batch]]
    from accelerate.utils import gather_object

    ranks = {"rank_examples": gather_object(used)}
    if not engine:  # DDP: every rank holds the whole weights, which must agree
        ranks["rank_weights_fingerprint"] = gather_object([weights_fingerprint(policy.parameters())])
    log = training_log(method, model_path, config, len(examples), len(rows), total_steps, started, device, history,
                       world_size=parallel.world_size, precision=precision, distributed=engine or "ddp", **ranks)
    # FSDP / ZeRO-3: every rank takes part in gathering the full weights; rank 0 writes them
    state_dict = accelerator.get_state_dict(forward_model) if engine else None
    if accelerator.is_main_process:
        save_checkpoint(accelerator.unwrap_model(forward_model), tokenizer, Path(output_dir), config, log,
                        state_dict=state_dict)
    end_accelerator(accelerator)
    return Path(output_dir)


@torch.no_grad()
def pair_log_ratio_margins(
    policy_path: str,
    reference_path: str,
    rows: Sequence[dict[str, Any]],
    config: TrainConfig | None = None,
) -> list[float]:
    """Per pair: (log πθ/πref)(chosen) − (log πθ/πref)(rejected), in float32 without autocast.

    The check that training moved a checkpoint the intended way (it should go up from 0).
    Pair rows only (dpo / step-dpo / step-apo columns).
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    tokenizer = load_tokenizer(policy_path)
    policy = load_causal_lm(policy_path, device).eval()
    reference = load_causal_lm(reference_path, device).eval()
    examples = pair_examples_from_rows(rows, "dpo", config)
    margins: list[float] = []
    for start in range(0, len(examples), config.batch_size):
        chunk = examples[start : start + config.batch_size]
        policy_chosen, policy_rejected, _ = pair_sequence_logprobs(policy, tokenizer, chunk, config, device)
        ref_chosen, ref_rejected, _ = pair_sequence_logprobs(reference, tokenizer, chunk, config, device)
        margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
        margins.extend(margin.tolist())
    return margins
