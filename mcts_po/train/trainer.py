"""A small preference-training loop: DPO, Step-DPO, Step-APO and TPO on extracted rows.

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

    from mcts_po.train.trainer import TrainConfig, train_preferences
    out = train_preferences("smollm2-135m", rows, "step-dpo", TrainConfig(max_steps=20), "runs/x/policy-1")

Weights are saved in float32 by default: a few small updates would round away in bf16.

Data parallel: under `torchrun --nproc_per_node N` or `accelerate launch --multi_gpu --num_processes N`
(which set RANK / WORLD_SIZE / LOCAL_RANK), each process takes every N-th micro-batch, the policy is
wrapped in DistributedDataParallel (nccl on GPU, one GPU per process; gloo on CPU), and rank 0
saves. The global batch is batch_size x gradient_accumulation_steps x N.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from mcts_po.io_utils import UserError
from mcts_po.precision import choose_bf16, normalize_bf16_choice
from mcts_po.train.logprobs import build_pair_batch, build_step_batch, sequence_logprobs, step_logprobs
from mcts_po.train.losses import (
    PreferenceLoss,
    adaptive_step_weights,
    conservative_label_smoothing,
    dpo_loss,
    step_apo_loss,
    tpo_listwise_loss,
    with_chosen_nll,
)

METHODS = ("dpo", "step-dpo", "step-apo", "tpo")
DEFAULT_BETA = {"dpo": 0.1, "step-dpo": 0.4, "step-apo": 0.3, "tpo": 0.5}
DEVICES = ("auto", "cpu", "cuda")
TRAINERS = ("mcts_po", "trl")
SAVE_DTYPES = ("float32", "bfloat16")
STEP_DELIMITER = "\n"  # the search's default (SamplingConfig.step_delimiter)


@dataclass
class TrainConfig:
    trainer: str = field(default="mcts_po", metadata={"help": "mcts_po: our loop, every method; trl: TRL's DPOTrainer for dpo/step-dpo, EOS only after a finishing step (mcts_po/train/trl_dpo.py)"})
    beta: float = field(default=0.0, metadata={"help": "beta of the loss; 0 = the method's default (dpo 0.1, step-dpo 0.4, step-apo 0.3, tpo 0.5)"})
    alpha: float = field(default=1.0, metadata={"help": "step-apo: weight of the advantage offset alpha*(Q_w - Q_l)"})
    sft_weight: float = field(default=0.0, metadata={"help": "dpo/step-dpo/step-apo: add this times the chosen step's per-token NLL to the loss (RPO); 0 = off; tpo ignores it"})
    conservative: bool = field(default=False, metadata={"help": "dpo/step-dpo: label smoothing min(N_l/(N_w+N_l), 0.5) from visits_chosen/visits_rejected (MCTS-DPO)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "dpo/step-dpo: a fixed label smoothing in [0, 0.5] (ignored with conservative)"})
    learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate (LoRA usually wants ~1e-4)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "optimizer steps of linear learning-rate warm-up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 = no clipping"})
    num_epochs: int = field(default=1, metadata={"help": "passes over the rows"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps; 0 = run all epochs"})
    batch_size: int = field(default=2, metadata={"help": "pairs (or TPO lists) per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(default=256, metadata={"help": "tokens per sequence; the prompt is cut from the left, never the completion"})
    max_list_size: int = field(default=4, metadata={"help": "tpo: responses kept per list (best, worst and evenly spaced ranks in between)"})
    step_delimiter: str = field(default=STEP_DELIMITER, metadata={"help": "text that ends an intermediate step (the search's step delimiter)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) and merge them into the saved weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules: 'all-linear' or comma-separated names"})
    bf16: str = field(default="auto", metadata={"help": "bf16 autocast for forward/backward: auto (bf16 only where the processor has it: a bf16 CUDA device, or a CPU with avx512_bf16/AMX, where it is ~3x faster; an AVX2-only CPU emulates it ~5x slower than float32), true or false; weights stay float32; the choice is recorded in training_log.json"})
    device: str = field(default="auto", metadata={"help": f"device: {', '.join(DEVICES)}"})
    ref_model: str = field(default="", metadata={"help": "reference model folder; empty = a frozen copy of the initial policy"})
    save_dtype: str = field(default="float32", metadata={"help": f"dtype of the saved weights: {', '.join(SAVE_DTYPES)}"})
    seed: int = field(default=0, metadata={"help": "seed of row shuffling and of LoRA initialisation"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the rows each epoch"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self) -> None:
        self.bf16 = normalize_bf16_choice(self.bf16)
        if self.beta < 0:
            raise ValueError(f"TrainConfig.beta must be >= 0 (0 = method default), got {self.beta!r}")
        if self.sft_weight < 0:
            raise ValueError(f"TrainConfig.sft_weight must be >= 0 (0 = off), got {self.sft_weight!r}")
        if not 0.0 <= self.label_smoothing <= 0.5:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 0.5], got {self.label_smoothing!r}")
        for name in ("num_epochs", "batch_size", "gradient_accumulation_steps", "max_list_size", "lora_r"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_list_size < 2:
            raise ValueError("TrainConfig.max_list_size must be >= 2 (a list needs two responses to rank)")
        if self.max_length < 2:
            raise ValueError(f"TrainConfig.max_length must be >= 2, got {self.max_length!r}")
        for name in ("max_steps", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"TrainConfig.trainer = {self.trainer!r} is not one of: {', '.join(TRAINERS)}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device = {self.device!r} is not one of: {', '.join(DEVICES)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"TrainConfig.save_dtype = {self.save_dtype!r} is not one of: {', '.join(SAVE_DTYPES)}")

    def beta_for(self, method: str) -> float:
        return self.beta if self.beta > 0 else DEFAULT_BETA[method]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown train options {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------- rows -> examples


@dataclass(frozen=True)
class PairExample:
    prompt: str
    chosen: str  # completion text as trained (an intermediate step ends with the delimiter)
    rejected: str
    chosen_eos: bool
    rejected_eos: bool
    q_chosen: float = 0.0
    q_rejected: float = 0.0
    visits_chosen: float = 0.0
    visits_rejected: float = 0.0


@dataclass(frozen=True)
class ListExample:
    prompt: str
    segments: tuple[tuple[str, ...], ...]  # per response, its step texts as trained
    ends_solution: tuple[bool, ...]
    values: tuple[float, ...]
    step_weights: tuple[tuple[float, ...], ...]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown training method {method!r}; valid: {', '.join(METHODS)}")
    return method


def step_completion(text: str, ends_solution: bool, delimiter: str) -> str:
    """The completion as trained: a finishing step as is (EOS follows), an intermediate step
    followed by the delimiter the model emitted to end it."""
    if ends_solution or text.endswith(delimiter):
        return text
    return text + delimiter


def _column(row: dict[str, Any], name: str, index: int) -> Any:
    if name not in row or row[name] is None:
        raise UserError(f"row {index}: missing column {name!r} (have: {', '.join(sorted(row))})")
    return row[name]


def pair_examples_from_rows(rows: Sequence[dict[str, Any]], method: str, config: TrainConfig) -> list[PairExample]:
    """Rows with prompt/chosen/rejected (+ q_*, visits_*, *_ends_solution) -> PairExample."""
    examples = []
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        chosen_ends = bool(row.get("chosen_ends_solution", True))
        rejected_ends = bool(row.get("rejected_ends_solution", True))
        example = PairExample(
            prompt=prompt,
            chosen=step_completion(str(_column(row, "chosen", index)), chosen_ends, config.step_delimiter),
            rejected=step_completion(str(_column(row, "rejected", index)), rejected_ends, config.step_delimiter),
            chosen_eos=chosen_ends,
            rejected_eos=rejected_ends,
            q_chosen=float(_column(row, "q_chosen", index)) if method == "step-apo" else 0.0,
            q_rejected=float(_column(row, "q_rejected", index)) if method == "step-apo" else 0.0,
            visits_chosen=float(_column(row, "visits_chosen", index)) if config.conservative else 0.0,
            visits_rejected=float(_column(row, "visits_rejected", index)) if config.conservative else 0.0,
        )
        examples.append(example)
    return examples


def spread_indices(count: int, keep: int) -> list[int]:
    """`keep` indices out of range(count): first, last and evenly spaced between."""
    if count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def list_examples_from_rows(rows: Sequence[dict[str, Any]], config: TrainConfig) -> list[ListExample]:
    """TPO rows (prompt, steps, values[, ends_solution]) -> ListExample with adaptive step weights.

    Each list is sorted best first and cut to `max_list_size` responses spread over the ranks;
    lists with fewer than two responses are skipped (nothing to rank).
    """
    examples = []
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        steps = _column(row, "steps", index)
        values = [float(v) for v in _column(row, "values", index)]
        ends = row.get("ends_solution") or [True] * len(steps)
        if not (len(steps) == len(values) == len(ends)):
            raise UserError(f"row {index}: {len(steps)} step lists, {len(values)} values, {len(ends)} ends_solution flags")
        for response, response_steps in enumerate(steps):
            if not response_steps:
                raise UserError(f"row {index}: response {response} has no steps")
        order = sorted(range(len(values)), key=lambda i: -values[i])
        kept = [order[i] for i in spread_indices(len(order), config.max_list_size)]
        if len(kept) < 2:
            continue
        kept_steps = [list(map(str, steps[i])) for i in kept]
        kept_values = [values[i] for i in kept]
        weights = adaptive_step_weights(kept_steps, kept_values)
        segments = []
        for i, response_steps in zip(kept, kept_steps):
            texts = [step_completion(text, False, config.step_delimiter) for text in response_steps[:-1]]
            texts.append(step_completion(response_steps[-1], bool(ends[i]), config.step_delimiter))
            segments.append(tuple(texts))
        examples.append(ListExample(
            prompt=prompt,
            segments=tuple(segments),
            ends_solution=tuple(bool(ends[i]) for i in kept),
            values=tuple(kept_values),
            step_weights=tuple(tuple(w) for w in weights),
        ))
    return examples


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


# ---------------------------------------------------------------- models


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun / accelerate launch
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


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


def load_causal_lm(path: str, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    from mcts_po.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(path), dtype=torch.float32)
    return model.to(device)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    from mcts_po.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = config.lora_target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora_config)


def save_checkpoint(model: Any, tokenizer: Any, output_dir: Path, config: TrainConfig, log: dict[str, Any]) -> Path:
    """Merge LoRA if any, save weights (config.save_dtype) + tokenizer + training_log.json atomically."""
    if config.lora:
        model = model.merge_and_unload()
    model = model.to("cpu").to(getattr(torch, config.save_dtype))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "training_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


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


def resolve_precision(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str]:
    """`config` with bf16 'auto' resolved for `device` to 'true'/'false', and the reason (logged)."""
    use_bf16, reason = choose_bf16(config.bf16, device.type)
    print(f"train: {'bf16 autocast' if use_bf16 else 'float32'} ({reason})", file=sys.stderr)
    return replace(config, bf16="true" if use_bf16 else "false"), reason


def training_log(method: str, model_path: str, config: TrainConfig, num_examples: int, num_rows: int,
                 optimizer_steps: int, started: float, device: torch.device, history: list[dict[str, float]],
                 **extra: Any) -> dict[str, Any]:
    """The `training_log.json` saved beside a checkpoint (`started`: time.monotonic() at the start)."""
    return {"method": method, "model": model_path, "reference": config.ref_model or model_path,
            "examples": num_examples, "rows": num_rows, "optimizer_steps": optimizer_steps,
            "seconds": round(time.monotonic() - started, 2), "device": str(device), **extra,
            "config": config.to_dict(), "history": history}


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
    from tqdm.auto import tqdm

    check_method(method)
    if config.trainer == "trl":
        from mcts_po.train.trl_dpo import train_with_trl

        return train_with_trl(model_path, rows, method, config, output_dir)
    if config.label_smoothing and method not in ("dpo", "step-dpo"):
        raise UserError(f"label_smoothing applies to dpo/step-dpo, not {method}")
    if config.conservative and method not in ("dpo", "step-dpo"):
        raise UserError(f"conservative (visit-count label smoothing) applies to dpo/step-dpo, not {method}")
    if config.sft_weight and method == "tpo":  # not an error: one loop config serves all methods
        print(f"train: sft_weight={config.sft_weight:g} applies to the pair methods dpo/step-dpo/step-apo; "
              "tpo trains without it", file=sys.stderr)
    examples: list[Any] = (
        list_examples_from_rows(rows, config) if method == "tpo" else pair_examples_from_rows(rows, method, config)
    )
    if not examples:
        raise UserError(f"no {method} training examples in {len(rows)} rows")
    started = time.monotonic()
    device = resolve_device(config.device)
    config, precision = resolve_precision(config, device)
    parallel = data_parallel_from_env()
    created_group = start_data_parallel(parallel, device)
    torch.manual_seed(config.seed)  # LoRA initialisation draws from the global generator
    tokenizer = load_tokenizer(model_path)
    policy = load_causal_lm(model_path, device)
    reference = load_causal_lm(config.ref_model, device) if config.ref_model else copy.deepcopy(policy)
    reference.eval().requires_grad_(False)
    if config.lora:
        policy = add_lora(policy, config)
    policy.train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    forward_model = policy
    if parallel.world_size > 1:  # gradients are averaged over ranks in backward()
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)

    batches = micro_batches(examples, config, random.Random(config.seed))
    if parallel.world_size > 1:
        batches = rank_batches(batches, parallel)
        if not batches:
            raise UserError(f"{len(examples)} examples make fewer micro-batches than the {parallel.world_size} processes")
    accumulation = config.gradient_accumulation_steps
    total_steps = math.ceil(len(batches) / accumulation)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    history: list[dict[str, float]] = []
    bar = tqdm(total=total_steps, desc=f"train {method}", unit="step", disable=not (config.progress and parallel.is_main))
    for step in range(total_steps):
        group = batches[step * accumulation : (step + 1) * accumulation]
        optimizer.zero_grad(set_to_none=True)
        step_loss, margins, ordered, nlls = 0.0, [], [], []
        for batch in group:
            if method == "tpo":
                out = list_batch_loss(forward_model, reference, tokenizer, batch, config, device)
                ordered.append(ordered_pair_fraction(out.chosen_rewards, batch))
            else:
                out, chosen_nll = pair_batch_loss(forward_model, reference, tokenizer, batch, method, config, device)
                nlls.append(chosen_nll)
                margins.extend((out.chosen_rewards - out.rejected_rewards).float().tolist())
            (out.loss / len(group)).backward()
            step_loss += out.loss.item() / len(group)
        grad_norm = (torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm).item()
                     if config.max_grad_norm > 0 else float("nan"))
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "loss": step_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
        if margins:
            record["reward_margin"] = sum(margins) / len(margins)
            record["reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
            record["chosen_nll"] = sum(nlls) / len(nlls)
        if ordered:
            record["ordered_pair_fraction"] = sum(ordered) / len(ordered)
        history.append(record)
        bar.set_postfix(loss=f"{step_loss:.4f}", **({"margin": f"{record['reward_margin']:.3f}"} if margins else {}))
        bar.update(1)
    bar.close()
    policy.eval()
    log = training_log(method, model_path, config, len(examples), len(rows), total_steps, started, device, history,
                       world_size=parallel.world_size, precision=precision)
    if parallel.world_size == 1:
        return save_checkpoint(policy, tokenizer, Path(output_dir), config, log)
    import torch.distributed as dist

    if parallel.is_main:  # the weights are identical on every rank
        save_checkpoint(policy, tokenizer, Path(output_dir), config, log)
    dist.barrier()
    if created_group:
        dist.destroy_process_group()
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
