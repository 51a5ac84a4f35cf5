"""A value model learned from search trees: a scalar head on a causal-LM backbone, trained and scored.

AlphaZero's second network. `mcts-po extract --format value|ppm` writes the rows; this module
trains on them and scores reasoning paths with the result:

- `--method value` (AlphaMath-style regression, our own loop): every step of a `value` row
  gets the head's score r at the step's last token; loss = weighted mean of
  (tanh(r) - label)^2 over the steps, the label being the node's MCTS Q in [-1, 1]. Each
  (tree_id, node_id) counts once in total: a step on k rows weighs 1/k on each (rows are
  maximal paths, so steps near the root sit on many).
  `--target outcome` regresses to 2 s - 1 instead, s the share of correct verified terminals at
  or below the step (steps without one weigh 0). `--backbone frozen` keeps the policy's backbone
  as it is and fits only the head: one forward pass per row that holds a weighted node no
  longer row holds (with the outcome target a row whose last step has no verified terminal
  below holds none: on value_data's 256 trees 1,428 of 3,014 rows, 48 % of the text, are run),
  then the same weighted loss plus
  `head_l2` |w|^2 minimised by full-batch L-BFGS (seconds; benchmarks/value_data.md measured
  such heads against the fine-tuned ones on held-out trees).
- `--method ppm` (rStar-Math's process preference model, Bradley-Terry): TRL's
  `RewardTrainer` on `ppm` rows, loss -log sigma(r_chosen - r_rejected) (with
  `ppm_use_margin`, RewardTrainer's -log sigma(r_w - r_l - margin) on the rows' Q margin).
  The rows are tokenised here (prompt + step, no EOS) so that the score sits at the step's
  last token, where `score_paths` reads it.

The model is `AutoModelForSequenceClassification(num_labels=1)` initialised from the policy
(`ValueConfig.value_init` overrides; its tokenizer must equal the policy's): a Llama-family
`*ForSequenceClassification` (SmolLM2 included) is the backbone plus a linear `score` head, and
its own forward pools the score at the last non-pad token, which is the step's last token for
every row tokenised here. LoRA (`TrainConfig.lora`) trains adapters plus the whole head and is
merged before saving. The saved folder is a normal HF folder (`from_pretrained` loads it; the
tokenizer and `training_log.json` beside it); `config.mcts_po_value` records the method, the
step delimiter and that scores are read through tanh.

Scoring (what the search calls): `score_paths(model_dir, prompts, step_lists)` ->
per path, one value in [-1, 1] per step: tanh of the head at the last token of that step, the
text being `prompt + step_1 + delimiter + ... + step_k` (the node's state as the search writes
it, without the delimiter after the last step). One forward pass per batch of paths.

    from mcts_po.train.config import ValueConfig
    from mcts_po.train.value_model import train_value_model, score_paths
    out = train_value_model("smollm2-135m", rows, "value", TrainConfig(max_steps=20), "runs/value-1")
    score_paths(out, [prompt], [["3 * 4 = 12.", "2 + 12 = 14."]])   # [[v1, v2]]
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from mcts_po.io_utils import UserError
from mcts_po.progress import bars_enabled, progress_bar
from mcts_po.train.checkpoints import load_tokenizer, resolve_device, resolve_precision, save_checkpoint, training_log
from mcts_po.train.config import VALUE_TARGETS, ValueConfig
from mcts_po.train.logprobs import position_ids_from_attention_mask, tokenize_segments
from mcts_po.train.trainer import autocast_context, micro_batches

VALUE_METHODS = ("value", "ppm")
CONFIG_KEY = "mcts_po_value"  # model.config attribute saved in config.json
DEFAULT_DELIMITER = "\n"


# ---------------------------------------------------------------- tokenisation


def tokenize_path(tokenizer: Any, prompt: str, steps: Sequence[str], delimiter: str) -> tuple[list[int], list[int]]:
    """prompt + step_1 + delimiter + ... + step_k tokenised once; per step, the index of its last token.

    A step's last token is the last token lying wholly inside the text up to the step's end
    (a token straddling into the delimiter belongs to the delimiter), so the step's score never
    sees the text after it."""
    segments = [prompt]
    for index, step in enumerate(steps):
        if index:
            segments.append(delimiter)
        segments.append(step)
    token_ids, segment_of_token = tokenize_segments(tokenizer, segments)
    if not token_ids:
        raise ValueError("the path tokenised to nothing")
    ends = []
    position = 0
    for step_index in range(len(steps)):
        last_segment = 1 + 2 * step_index
        while position + 1 < len(token_ids) and segment_of_token[position + 1] <= last_segment:
            position += 1
        ends.append(position)
    return token_ids, ends


@dataclass(frozen=True)
class PathBatch:
    """Right-padded paths: input_ids / attention_mask LongTensor[B, T]; step_ends LongTensor[B, S]
    (token index of each step's last token, -1 where a path has no such step or it was cut off)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    step_ends: torch.Tensor

    def to(self, device: torch.device | str) -> "PathBatch":
        return PathBatch(self.input_ids.to(device), self.attention_mask.to(device), self.step_ends.to(device))


def build_path_batch(tokenizer: Any, prompts: Sequence[str], step_lists: Sequence[Sequence[str]], delimiter: str,
                     max_length: int | None = None) -> PathBatch:
    """Tokenise and pad paths. With `max_length`, tokens are cut from the left (the prompt first);
    a step whose last token is cut off gets -1 (no score)."""
    if len(prompts) != len(step_lists):
        raise ValueError(f"{len(prompts)} prompts but {len(step_lists)} step lists")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
    rows = []
    for index, (prompt, steps) in enumerate(zip(prompts, step_lists)):
        if not steps:
            raise ValueError(f"path {index} has no steps")
        token_ids, ends = tokenize_path(tokenizer, prompt, steps, delimiter)
        cut = max(0, len(token_ids) - max_length) if max_length else 0
        rows.append((token_ids[cut:], [end - cut if end >= cut else -1 for end in ends]))
    width = max(len(ids) for ids, _ in rows)
    num_steps = max(len(ends) for _, ends in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    step_ends = torch.full((len(rows), num_steps), -1, dtype=torch.long)
    for row, (ids, ends) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        step_ends[row, : len(ends)] = torch.tensor(ends, dtype=torch.long)
    return PathBatch(input_ids, attention_mask, step_ends)


# ---------------------------------------------------------------- the head


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers stay in place inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_and_backbone(model: Any) -> tuple[Any, Any]:
    """The `score` head and the backbone under it (the model's `base_model_prefix` attribute)."""
    inner = unwrap(model)
    head = getattr(inner, "score", None)
    backbone = getattr(inner, getattr(inner, "base_model_prefix", "model"), None)
    if head is None or backbone is None:
        raise UserError(f"{type(inner).__name__} is not a *ForSequenceClassification with a `score` head; "
                        "value models need one (Llama, Qwen2, Mistral, SmolLM2, ...)")
    return head, backbone


def last_hidden_states(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The backbone's last hidden state at every position of right-padded rows: Tensor[B, T, H]."""
    return backbone(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids_from_attention_mask(attention_mask), use_cache=False).last_hidden_state


def token_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The head's raw score at every position: Tensor[B, T] float32 (backbone, then `score`)."""
    head, backbone = head_and_backbone(model)
    return head(last_hidden_states(backbone, input_ids, attention_mask)).squeeze(-1).float()


def step_scores(model: Any, batch: PathBatch) -> torch.Tensor:
    """Raw head scores at each step's last token: Tensor[B, S] (0 where step_ends is -1)."""
    scores = token_scores(model, batch.input_ids, batch.attention_mask)
    picked = scores.gather(1, batch.step_ends.clamp(min=0))
    return picked * (batch.step_ends >= 0).to(picked.dtype)


def load_value_model(path: str, device: torch.device | str = "cpu", pad_token_id: int | None = None) -> Any:
    """`AutoModelForSequenceClassification(num_labels=1)` in float32: a causal LM gets a new head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from mcts_po.models import resolve_model

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model(path), num_labels=1,
                                                                   dtype=torch.float32)
    except ValueError as error:
        raise UserError(f"{path}: cannot load as a value model with a scalar head ({error})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model.to(device)


def check_same_tokenizer(policy_path: str, value_path: str) -> None:
    """Refuse a value model whose tokenizer differs from the policy's (vocabulary or EOS)."""
    from mcts_po.train.trainer import load_tokenizer

    policy, value = load_tokenizer(policy_path), load_tokenizer(value_path)
    policy_vocab, value_vocab = policy.get_vocab(), value.get_vocab()
    if policy_vocab != value_vocab or policy.eos_token != value.eos_token:
        differing = len(set(policy_vocab.items()) ^ set(value_vocab.items()))
        raise UserError(f"the value model {value_path!r} has another tokenizer than the policy {policy_path!r} "
                        f"(vocabularies of {len(value_vocab)} and {len(policy_vocab)} tokens, {differing} entries "
                        f"differ; EOS {value.eos_token!r} vs {policy.eos_token!r}); start the value model from the "
                        "policy (leave --value-init empty) or from a model with the same tokenizer")


def add_value_lora(model: Any, config: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = config.lora_target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="SEQ_CLS", modules_to_save=["score"])
    return get_peft_model(model, lora)


# ---------------------------------------------------------------- rows -> examples


@dataclass(frozen=True)
class ValueExample:
    prompt: str
    steps: tuple[str, ...]
    labels: tuple[float, ...]
    weights: tuple[float, ...]
    keys: tuple[tuple[str, int], ...] | None = None  # (tree_id, node_id) per step where the rows name them


def rows_step_delimiter(rows: Sequence[dict[str, Any]]) -> str:
    """The step delimiter of value/ppm rows (their `step_delimiter` column, copied from the trees by
    `mcts-po extract`); rows without the column (hand-written) use DEFAULT_DELIMITER; mixed ones are refused."""
    delimiters = {row.get("step_delimiter") or DEFAULT_DELIMITER for row in rows}
    if len(delimiters) > 1:
        raise UserError(f"value rows with different step delimiters {sorted(map(repr, delimiters))}: train one "
                        "search's data (one delimiter) at a time")
    return delimiters.pop() if delimiters else DEFAULT_DELIMITER


def _column(row: dict[str, Any], name: str, index: int) -> Any:
    if name not in row or row[name] is None:
        raise UserError(f"row {index}: missing column {name!r} (have: {', '.join(sorted(row))})")
    return row[name]


def _step_targets(row: dict[str, Any], index: int, target: str, steps: int) -> list[float | None]:
    """The row's per-step regression targets in [-1, 1] (None: the step has no target and no weight)."""
    if target == "q":
        labels = _column(row, "labels", index)
    else:  # outcome: the share of correct verified terminals below, as 2 s - 1; None where none is verified
        labels = _column(row, "outcome", index)
    if len(labels) != steps:
        raise UserError(f"row {index}: {steps} completions but {len(labels)} {'labels' if target == 'q' else 'outcome'} values")
    values: list[float | None] = []
    for value in labels:
        if value is None and target == "outcome":
            values.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"row {index}: {target} targets must be numbers, got {labels!r}") from None
        if not math.isfinite(number) or (target == "outcome" and not 0.0 <= number <= 1.0):
            raise UserError(f"row {index}: {target} targets must be finite{' shares in [0, 1]' if target == 'outcome' else ''}, "
                            f"got {labels!r}")
        values.append(number if target == "q" else 2.0 * number - 1.0)
    return values


def value_examples_from_rows(rows: Sequence[dict[str, Any]], count_steps_once: bool = True,
                             target: str = "q") -> list[ValueExample]:
    """`value` rows (prompt, completions, labels or outcome[, tree_id, node_ids]) -> ValueExample with
    step weights. `target` q reads `labels`; outcome reads `outcome` (a step without a verified
    terminal below weighs 0, and a row none of whose steps has one is dropped)."""
    if target not in VALUE_TARGETS:
        raise UserError(f"unknown value target {target!r}; valid: {', '.join(VALUE_TARGETS)}")
    parsed = []
    occurrences: dict[tuple[str, int], int] = {}
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        steps = [str(s) for s in _column(row, "completions", index)]
        if not steps:
            raise UserError(f"row {index}: no steps")
        labels = _step_targets(row, index, target, len(steps))
        keys = None
        if count_steps_once and row.get("node_ids") is not None and "tree_id" in row:
            keys = [(str(row["tree_id"]), int(n)) for n in row["node_ids"]]
            if len(keys) != len(steps):
                raise UserError(f"row {index}: {len(steps)} completions but {len(keys)} node_ids")
            for key in keys:
                occurrences[key] = occurrences.get(key, 0) + 1
        parsed.append((prompt, steps, labels, keys))
    examples = []
    for prompt, steps, labels, keys in parsed:
        weights = [1.0 / occurrences[key] for key in keys] if keys else [1.0] * len(steps)
        weights = [0.0 if label is None else weight for label, weight in zip(labels, weights)]
        if any(weights):
            examples.append(ValueExample(prompt, tuple(steps), tuple(0.0 if v is None else v for v in labels),
                                         tuple(weights), tuple(keys) if keys else None))
    return examples


def value_regression_loss(raw_scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """AlphaMath's value loss: weighted mean of (tanh(r) - Q)^2 over the steps (weights 0 = no step)."""
    total = weights.sum()
    if total <= 0:
        raise ValueError("no step with a positive weight in the batch")
    return (weights * (torch.tanh(raw_scores) - labels) ** 2).sum() / total


# ---------------------------------------------------------------- training


def _prepare(model_path: str, method: str, config: Any, value_config: ValueConfig, rows: Sequence[dict[str, Any]]):
    if not rows:
        raise UserError(f"no {method} rows to train a value model on (an empty value dataset); "
                        f"run `mcts-po extract --format {method}` on searched trees")
    init = value_config.value_init or model_path
    if value_config.value_init and value_config.value_init != model_path:
        check_same_tokenizer(model_path, init)
    device = resolve_device(config.device)
    config, precision = resolve_precision(config, device)
    torch.manual_seed(config.seed)  # the new head and LoRA draw from the global generator
    tokenizer = load_tokenizer(model_path)
    model = load_value_model(init, device, tokenizer.pad_token_id)
    return device, config, precision, tokenizer, model, init


def _save(model: Any, tokenizer: Any, output_dir: Path, config: Any, method: str, log: dict[str, Any],
          delimiter: str) -> Path:
    unwrap(model).config.__setattr__(CONFIG_KEY, {"method": method, "step_delimiter": delimiter,
                                                  "score": "tanh of the head at each step's last token"})
    return save_checkpoint(model, tokenizer, output_dir, config, log)


def train_value_model(model_path: str, rows: Sequence[dict[str, Any]], method: str, config: Any,
                      output_dir: str | Path, value_config: ValueConfig | None = None) -> Path:
    """Train a value model on `value` or `ppm` rows; save an HF folder to `output_dir`; return it.

    `config` is the policy's `TrainConfig` (learning rate, batch size, steps, max_length, step
    delimiter, LoRA, precision, device, seed, save dtype); `value_config` the value-only options."""
    value_config = value_config or ValueConfig()
    if method not in VALUE_METHODS:
        raise UserError(f"unknown value-model method {method!r}; valid: {', '.join(VALUE_METHODS)}")
    if method == "ppm":
        return _train_ppm(model_path, rows, config, Path(output_dir), value_config)
    examples = value_examples_from_rows(rows, value_config.count_steps_once, value_config.target)  # row errors before loading
    if rows and not examples:
        raise UserError(f"none of the {len(rows)} value rows has a step with a {value_config.target} target "
                        "(target outcome needs verified terminals below a step)")
    if value_config.backbone == "frozen":
        return _fit_frozen_head(model_path, rows, examples, config, Path(output_dir), value_config)
    return _train_regression(model_path, rows, examples, config, Path(output_dir), value_config)


def _train_regression(model_path: str, rows: Sequence[dict[str, Any]], examples: list[ValueExample],
                      config: Any, output_dir: Path, value_config: ValueConfig) -> Path:
    started = time.monotonic()
    method = "value"
    device, config, precision, tokenizer, model, init = _prepare(model_path, method, config, value_config, rows)
    if not examples:
        raise UserError(f"no value training examples in {len(rows)} rows")
    if config.lora:
        model = add_value_lora(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    batches = micro_batches(examples, config, random.Random(config.seed))
    accumulation = config.gradient_accumulation_steps
    total_steps = math.ceil(len(batches) / accumulation)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    history: list[dict[str, float]] = []
    bar = progress_bar(config.progress, total=total_steps, desc="train value", unit="step")
    for step in range(total_steps):
        group = batches[step * accumulation : (step + 1) * accumulation]
        optimizer.zero_grad(set_to_none=True)
        step_loss, abs_errors = 0.0, []
        for batch_examples in group:
            batch = build_path_batch(tokenizer, [e.prompt for e in batch_examples], [e.steps for e in batch_examples],
                                     rows_step_delimiter(rows), config.max_length).to(device)
            labels = torch.zeros(batch.step_ends.shape, device=device)
            weights = torch.zeros(batch.step_ends.shape, device=device)
            for row, example in enumerate(batch_examples):
                labels[row, : len(example.labels)] = torch.tensor(example.labels)
                weights[row, : len(example.weights)] = torch.tensor(example.weights)
            weights = weights * (batch.step_ends >= 0)
            with autocast_context(device, config.bf16):
                raw = step_scores(model, batch)
            loss = value_regression_loss(raw.float(), labels, weights)
            (loss / len(group)).backward()
            step_loss += loss.item() / len(group)
            trained = weights > 0
            abs_errors.extend((torch.tanh(raw.detach()) - labels)[trained].abs().tolist())
        grad_norm = (torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm).item()
                     if config.max_grad_norm > 0 else float("nan"))
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "loss": step_loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                  "mean_abs_error": sum(abs_errors) / len(abs_errors) if abs_errors else float("nan")}
        history.append(record)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        bar.update(1)
    bar.close()
    model.eval()
    log = training_log(method, model_path, config, len(examples), len(rows), total_steps, started, device,
                            history, trainer="mcts_po", precision=precision, value_init=init,
                            value_config=value_config.to_dict(),
                            steps_trained=sum(len(e.steps) for e in examples))
    return _save(model, tokenizer, output_dir, config, method, log, rows_step_delimiter(rows))


def fit_tanh_head(features: torch.Tensor, targets: Sequence[float], weights: Sequence[float] | None = None,
                  l2: float = 0.1, max_iter: int = 200) -> tuple[torch.Tensor, float, int]:
    """The head w (no bias) minimising sum_i a_i (tanh(w . x_i) - y_i)^2 + l2 |w|^2, a = weights / sum
    (equal without weights), by full-batch L-BFGS from zero: (w, the weighted squared error, iterations)."""
    x = features.float()
    y = torch.tensor(list(targets), dtype=torch.float32)
    a = torch.ones(len(y)) if weights is None else torch.tensor(list(weights), dtype=torch.float32)
    if len(y) != x.shape[0] or len(a) != len(y) or len(y) == 0 or a.sum() <= 0:
        raise ValueError(f"fit_tanh_head: {x.shape[0]} features, {len(y)} targets, {len(a)} weights (sum {float(a.sum())})")
    a = a / a.sum()
    w = torch.zeros(x.shape[1], requires_grad=True)
    optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (a * (torch.tanh(x @ w) - y) ** 2).sum() + float(l2) * (w ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    iterations = int(optimiser.state[w].get("n_iter", 0))
    w = w.detach()
    with torch.no_grad():
        error = float((a * (torch.tanh(x @ w) - y) ** 2).sum())
    return w, error, iterations


def _fit_frozen_head(model_path: str, rows: Sequence[dict[str, Any]], examples: list[ValueExample], config: Any,
                     output_dir: Path, value_config: ValueConfig) -> Path:
    """backbone frozen: forward passes give every step's last hidden state h; the head w (the `score`
    layer, no bias) minimises sum_i a_i (tanh(w . h_i) - y_i)^2 / sum_i a_i + head_l2 |w|^2 (a_i the
    step weights, so each node counts once), by full-batch L-BFGS from zero.

    A node named by several rows (every path through it: `tree_id`/`node_ids`) is read once, from
    the longest row that holds it, with the sum of its weights: under causal attention its h is
    the same in every row that holds it, so the objective is unchanged while only the rows that
    bring a node no longer row brought run through the backbone (`rows_forwarded` in the log). A
    step cut off by max_length in that row is read from a later, shorter row that holds it."""
    if config.lora:
        raise UserError("value backbone frozen fits only the head: LoRA adapters would not be trained (leave lora off)")
    started = time.monotonic()
    method = "value"
    device, config, precision, tokenizer, model, init = _prepare(model_path, method, config, value_config, rows)
    model.eval()
    head, backbone = head_and_backbone(model)
    delimiter = rows_step_delimiter(rows)
    order = sorted(range(len(examples)), key=lambda i: -(len(examples[i].prompt) + sum(map(len, examples[i].steps))))
    key_weight: dict[tuple[str, int], float] = {}  # a named node's weights summed over the rows that hold it
    for example in examples:
        for key, weight in zip(example.keys or (), example.weights):
            key_weight[key] = key_weight.get(key, 0.0) + weight
    claimed: set[tuple[str, int]] = set()  # named nodes whose h is read (or being read) from a row already taken

    def new_steps(example: ValueExample) -> list[int]:
        keys = example.keys or (None,) * len(example.steps)
        return [step for step, (key, weight) in enumerate(zip(keys, example.weights))
                if weight > 0 and (key is None or key not in claimed)]

    features, targets, weights = [], [], []
    rows_forwarded, position = 0, 0
    bar = progress_bar(config.progress, total=len(order), desc="value features", unit="row")
    with torch.no_grad(), autocast_context(device, config.bf16):
        while position < len(order):
            chunk: list[tuple[ValueExample, list[int]]] = []
            scanned = position
            while position < len(order) and len(chunk) < config.batch_size:
                example = examples[order[position]]
                position += 1
                steps = new_steps(example)
                if steps:
                    claimed.update(example.keys[s] for s in steps if example.keys)
                    chunk.append((example, steps))
            bar.update(position - scanned)
            if not chunk:
                continue
            rows_forwarded += len(chunk)
            batch = build_path_batch(tokenizer, [e.prompt for e, _ in chunk], [e.steps for e, _ in chunk], delimiter,
                                     config.max_length).to(device)
            hidden = last_hidden_states(backbone, batch.input_ids, batch.attention_mask).float()
            for row, (example, steps) in enumerate(chunk):
                for step in steps:
                    end = int(batch.step_ends[row, step])
                    key = example.keys[step] if example.keys else None
                    if end < 0:  # cut off by max_length here: a later row may still hold it
                        claimed.discard(key)
                        continue
                    features.append(hidden[row, end].cpu())
                    targets.append(example.labels[step])
                    weights.append(key_weight[key] if key is not None else example.weights[step])
    bar.close()
    if not features:
        raise UserError(f"no step of the {len(rows)} value rows is left to fit the head on (all cut by max_length?)")
    x = torch.stack(features)
    w, loss, iterations = fit_tanh_head(x, targets, weights, float(value_config.head_l2))
    y, a = torch.tensor(targets), torch.tensor(weights) / sum(weights)
    with torch.no_grad():
        head.weight.copy_(w.view_as(head.weight).to(head.weight.dtype))
        mean_abs_error = float((a * (torch.tanh(x @ w) - y).abs()).sum())
    history = [{"step": 1, "loss": loss, "mean_abs_error": mean_abs_error, "lbfgs_iterations": iterations}]
    log = training_log(method, model_path, config, len(examples), len(rows), 1, started, device, history,
                       trainer="mcts_po frozen backbone + L-BFGS head", precision=precision, value_init=init,
                       value_config=value_config.to_dict(), steps_trained=len(features))
    log["rows_forwarded"] = rows_forwarded
    return _save(model, tokenizer, output_dir, config, method, log, delimiter)


# ---------------------------------------------------------------- ppm through TRL


def ppm_pair_ids(tokenizer: Any, prompt: str, step: str, delimiter: str, max_length: int) -> list[int]:
    """prompt + step tokenised as `score_paths` does, ending at the step's last token (no EOS); cut from
    the left to `max_length`."""
    token_ids, ends = tokenize_path(tokenizer, prompt, [step], delimiter)
    token_ids = token_ids[: ends[-1] + 1]
    return token_ids[-max_length:]


def ppm_dataset(tokenizer: Any, rows: Sequence[dict[str, Any]], config: Any, use_margin: bool) -> Any:
    """TRL's tokenised preference columns (`chosen_ids`, `rejected_ids`[, `margin`]) from ppm rows."""
    from datasets import Dataset

    records = []
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        record = {side: ppm_pair_ids(tokenizer, prompt, str(_column(row, name, index)), rows_step_delimiter(rows),
                                     config.max_length)
                  for side, name in (("chosen_ids", "chosen"), ("rejected_ids", "rejected"))}
        if use_margin:
            record["margin"] = float(_column(row, "margin", index))
        records.append(record)
    return Dataset.from_list(records)


def history_from_reward_trainer(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    history = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        record = {"step": int(entry["step"]), "loss": float(entry["loss"]),
                  "grad_norm": float(entry.get("grad_norm", float("nan"))), "lr": float(entry.get("learning_rate", 0.0))}
        if "margin" in entry:
            record["reward_margin"] = float(entry["margin"])
        if "accuracy" in entry:
            record["reward_accuracy"] = float(entry["accuracy"])
        history.append(record)
    return history


def _train_ppm(model_path: str, rows: Sequence[dict[str, Any]], config: Any, output_dir: Path,
               value_config: ValueConfig) -> Path:
    from trl import RewardConfig, RewardTrainer

    from mcts_po.train.trl_dpo import total_optimizer_steps

    started = time.monotonic()
    device, config, precision, tokenizer, model, init = _prepare(model_path, "ppm", config, value_config, rows)
    dataset = ppm_dataset(tokenizer, rows, config, value_config.ppm_use_margin)
    if config.lora:
        model = add_value_lora(model, config)
    with tempfile.TemporaryDirectory(prefix="mcts_po_ppm_") as scratch:
        args = RewardConfig(
            output_dir=scratch, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
            warmup_steps=config.warmup_steps, max_grad_norm=config.max_grad_norm,
            max_steps=total_optimizer_steps(len(dataset), config),
            per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
            lr_scheduler_type="constant_with_warmup", optim="adamw_torch", max_length=None,
            bf16=config.bf16 == "true", use_cpu=device.type == "cpu", gradient_checkpointing=False,
            seed=config.seed, data_seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
            disable_tqdm=not bars_enabled(config.progress),
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        if not config.progress:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = history_from_reward_trainer(trainer.state.log_history)
        steps = trainer.state.global_step
        model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    log = training_log("ppm", model_path, config, len(dataset), len(rows), steps, started, device, history,
                            trainer="trl RewardTrainer", precision=precision, value_init=init,
                            value_config=value_config.to_dict())
    return _save(model, tokenizer, output_dir, config, "ppm", log, rows_step_delimiter(rows))


# ---------------------------------------------------------------- scoring


class ValueScorer:
    """A loaded value model that scores paths: `ValueScorer(dir).score_paths(prompts, step_lists)`."""

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_size: int = 16,
                 delimiter: str | None = None):
        from mcts_po.train.trainer import load_tokenizer, resolve_device

        self.model_dir = str(model_dir)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_value_model(self.model_dir, self.device, self.tokenizer.pad_token_id).eval()
        saved = getattr(self.model.config, CONFIG_KEY, None) or {}
        self.delimiter = delimiter if delimiter is not None else saved.get("step_delimiter", DEFAULT_DELIMITER)
        self.forward_calls = 0

    @torch.no_grad()
    def score_paths(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]], raw: bool = False) -> list[list[float]]:
        """Per path, one score per step: tanh(head) in [-1, 1] (raw=True: the head itself).
        Paths are batched longest first (by characters), so a batch pads to similar lengths."""
        if len(prompts) != len(step_lists):
            raise ValueError(f"{len(prompts)} prompts but {len(step_lists)} step lists")
        order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + sum(len(s) for s in step_lists[i])))
        out: list[list[float] | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            chunk_steps = [list(step_lists[i]) for i in rows]
            batch = build_path_batch(self.tokenizer, [prompts[i] for i in rows], chunk_steps,
                                     self.delimiter).to(self.device)
            scores = step_scores(self.model, batch)
            self.forward_calls += 1
            if not raw:
                scores = torch.tanh(scores)
            for row, (index, steps) in enumerate(zip(rows, chunk_steps)):
                out[index] = scores[row, : len(steps)].tolist()
        return out  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _cached_scorer(model_dir: str, device: str, batch_size: int) -> ValueScorer:
    return ValueScorer(model_dir, device, batch_size)


def score_paths(model_dir: str | Path, prompts: Sequence[str], step_lists: Sequence[Sequence[str]],
                batch_size: int = 16, device: str = "auto") -> list[list[float]]:
    """Scores in [-1, 1] of every step of every path (one forward per `batch_size` paths); the model
    is loaded once per (folder, device, batch size) and kept for later calls."""
    return _cached_scorer(str(Path(model_dir).resolve()) if Path(model_dir).exists() else str(model_dir),
                          device, batch_size).score_paths(prompts, step_lists)


def value_model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over config.json and the weight files of a saved value model (for tree metadata)."""
    folder = Path(model_dir)
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    if not files:
        raise UserError(f"{folder}: no config.json or weights to fingerprint")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
