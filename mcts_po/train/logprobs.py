"""Log-probabilities of completions under a causal LM, and the tokenisation that feeds them.

The preference losses in `mcts_po.train.losses` work on per-sequence or per-step summed
log-probabilities; this module computes those from a `transformers` causal LM:

- `token_logprobs_from_logits(logits, input_ids)`: entry t is log p(token_t | tokens_<t),
  read from the logits at position t-1 (the causal shift); entry 0 has no predictor and is 0.
- `sequence_logprobs(model, input_ids, attention_mask, completion_mask) -> Tensor[B]`:
  the sum of those over the completion positions.
- `step_logprobs(model, input_ids, attention_mask, step_ids) -> Tensor[B, S]`: the same sum
  split by reasoning step (`step_ids[b, t]` = step index of token t, -1 for prompt/padding),
  for TPO's adaptive step reward.
- `build_step_batch` / `build_pair_batch`: tokenise prompt + completion (a completion may be
  a list of step texts), mark the completion (and each step), append EOS only where asked
  (an intermediate reasoning step must not end with EOS; only a step that ends the solution
  does), truncate the prompt from the left when too long (never the completion), and pad
  left or right.

Positions ids are computed from the attention mask, so a left-padded and a right-padded copy
of the same sequence get the same log-probabilities.

    from mcts_po.train.logprobs import build_pair_batch, sequence_logprobs
    batch = build_pair_batch(tokenizer, prompts, completions, append_eos, max_length=128)
    logps = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch

NOT_IN_COMPLETION = -1  # step id of prompt and padding tokens


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of prompt + completion token ids.

    input_ids, attention_mask: LongTensor[B, T]; completion_mask: BoolTensor[B, T] (True on
    completion tokens, including an appended EOS); step_ids: LongTensor[B, T] (index of the
    completion step a token belongs to, `NOT_IN_COMPLETION` = -1 on prompt and padding);
    num_steps: LongTensor[B] (steps per example).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    step_ids: torch.Tensor
    num_steps: torch.Tensor

    def to(self, device: torch.device | str) -> "TokenBatch":
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            completion_mask=self.completion_mask.to(device),
            step_ids=self.step_ids.to(device),
            num_steps=self.num_steps.to(device),
        )


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row (padding gets 0), whatever the padding side."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def token_logprobs_from_logits(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for every position t: Tensor[B, T] in float32.

    The causal shift: the logits at position t-1 predict token t. Position 0 has no predictor
    and gets 0 (callers never count it: a completion always follows at least one prompt token).
    """
    if logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match input_ids {tuple(input_ids.shape)}")
    predicting_logits = logits[:, :-1, :].float()
    predicted_tokens = input_ids[:, 1:]
    picked = predicting_logits.gather(-1, predicted_tokens.unsqueeze(-1)).squeeze(-1)
    shifted = picked - torch.logsumexp(predicting_logits, dim=-1)
    first = torch.zeros_like(shifted[:, :1])
    return torch.cat([first, shifted], dim=1)


def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Run `model` and return `token_logprobs_from_logits` of its logits: Tensor[B, T] float32."""
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_attention_mask(attention_mask),
        use_cache=False,
    )
    return token_logprobs_from_logits(outputs.logits, input_ids)


def sequence_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Sum of log p(token_t | tokens_<t) over the completion positions: Tensor[B] float32."""
    if completion_mask.shape != input_ids.shape:
        raise ValueError(f"completion_mask {tuple(completion_mask.shape)} != input_ids {tuple(input_ids.shape)}")
    if completion_mask[:, 0].any():
        raise ValueError("a completion token at position 0 has no preceding token to predict it")
    per_token = token_logprobs(model, input_ids, attention_mask)
    return (per_token * completion_mask.to(per_token.dtype)).sum(dim=-1)


def sum_by_step(per_token: torch.Tensor, step_ids: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
    """Sum per-token values into per-step buckets: Tensor[B, S] (S = num_steps or max id + 1).

    Tokens with step id -1 (prompt, padding) are dropped; steps a row lacks sum to 0.
    """
    if step_ids.shape != per_token.shape:
        raise ValueError(f"step_ids {tuple(step_ids.shape)} != per-token values {tuple(per_token.shape)}")
    largest = int(step_ids.max().item()) if step_ids.numel() else -1
    width = largest + 1 if num_steps is None else num_steps
    if largest >= width:
        raise ValueError(f"step id {largest} does not fit num_steps={width}")
    in_step = step_ids >= 0
    buckets = torch.zeros(per_token.shape[0], width + 1, dtype=per_token.dtype, device=per_token.device)
    # Out-of-step tokens go to a spare last bucket that is cut off below.
    index = torch.where(in_step, step_ids, torch.full_like(step_ids, width))
    buckets = buckets.scatter_add(1, index, per_token * in_step.to(per_token.dtype))
    return buckets[:, :width]


def step_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    step_ids: torch.Tensor,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Per-step summed log-probabilities: Tensor[B, S] float32.

    `step_ids[b, t]` is the index of the step token t belongs to (-1 for prompt/padding).
    Summing the result over steps gives `sequence_logprobs` with completion_mask = step_ids >= 0.
    """
    if step_ids[:, 0].ge(0).any():
        raise ValueError("a step token at position 0 has no preceding token to predict it")
    per_token = token_logprobs(model, input_ids, attention_mask)
    return sum_by_step(per_token, step_ids, num_steps)


def tokenize_segments(tokenizer: Any, segments: Sequence[str]) -> tuple[list[int], list[int]]:
    """Tokenise the concatenation of `segments` once; say which segment each token belongs to.

    Tokenising the joined text (not each piece) gives the tokens the model itself would see.
    A token belongs to the segment holding its last character, so a token straddling a
    boundary (e.g. " the" across prompt | completion) counts for the later segment.
    """
    text = "".join(segments)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as error:
        raise ValueError("build_step_batch needs a fast tokenizer (return_offsets_mapping)") from error
    token_ids = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    segment_starts: list[int] = []
    position = 0
    for segment in segments:
        segment_starts.append(position)
        position += len(segment)
    segment_of_token: list[int] = []
    for start, end in offsets:
        last_char = max(end - 1, start)
        segment_of_token.append(max(bisect.bisect_right(segment_starts, last_char) - 1, 0))
    return token_ids, segment_of_token


def tokenize_completion(tokenizer: Any, prompt: str, steps: Sequence[str], append_eos: bool,
                        max_length: int, index: int = 0) -> tuple[list[int], list[int]]:
    """prompt + steps tokenised together, EOS after the last step when it ends the solution.

    Returns the token ids and, per token, the step it belongs to (-1 for the prompt; EOS belongs
    to the last step). The rules both trainers share: the prompt must tokenise to at least one
    token (it predicts the first completion token), and a completion is never truncated, so one
    that cannot fit `max_length` beside one prompt token raises ValueError naming the example.
    Callers cut surplus prompt tokens from the left.
    """
    if not prompt:
        raise ValueError(f"example {index}: empty prompt; the first completion token needs a prompt token")
    if not steps or not any(steps):
        raise ValueError(f"example {index}: empty completion")
    token_ids, segments = tokenize_segments(tokenizer, [prompt, *steps])
    step_of_token = [segment - 1 for segment in segments]  # prompt -> -1, step k -> k
    if append_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"example {index}: the completion ends the solution but the tokenizer has no EOS token")
        token_ids.append(tokenizer.eos_token_id)
        step_of_token.append(len(steps) - 1)
    num_prompt = sum(1 for step in step_of_token if step < 0)
    num_completion = len(token_ids) - num_prompt
    if num_prompt == 0:
        raise ValueError(f"example {index}: the prompt tokenised to nothing before the completion")
    if num_completion + 1 > max_length:
        raise ValueError(
            f"example {index}: the completion has {num_completion} tokens{' (with EOS)' if append_eos else ''}, "
            f"which with one prompt token exceeds max_length={max_length}; completions are never truncated: "
            "raise max_length or drop it")
    return token_ids, step_of_token


def build_step_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    step_lists: Sequence[Sequence[str]],
    append_eos: Sequence[bool],
    max_length: int,
    padding_side: str = "right",
) -> TokenBatch:
    """Tokenise prompt + steps for each example into a padded `TokenBatch`.

    `step_lists[i]` are the completion's step texts, concatenated verbatim (include the
    step delimiter in the texts if the model should see it). EOS is appended after the last
    step only where `append_eos[i]` is True (the step ends the solution). When prompt +
    completion exceed `max_length`, tokens are cut from the LEFT of the prompt; the completion
    is never cut, and at least one prompt token is kept (it predicts the first completion
    token), so an over-long completion raises ValueError naming the example.
    """
    if not (len(prompts) == len(step_lists) == len(append_eos)):
        raise ValueError(
            f"prompts ({len(prompts)}), completions ({len(step_lists)}) and append_eos "
            f"({len(append_eos)}) must have the same length"
        )
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
    rows: list[tuple[list[int], list[int]]] = []  # (token ids, step id per token)
    for index, (prompt, steps, with_eos) in enumerate(zip(prompts, step_lists, append_eos)):
        token_ids, step_of_token = tokenize_completion(tokenizer, prompt, steps, with_eos, max_length, index)
        cut = max(0, len(token_ids) - max_length)
        rows.append((token_ids[cut:], step_of_token[cut:]))
    width = max(len(token_ids) for token_ids, _ in rows)
    batch_size = len(rows)
    input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
    step_ids = torch.full((batch_size, width), NOT_IN_COMPLETION, dtype=torch.long)
    for row, (token_ids, step_of_token) in enumerate(rows):
        length = len(token_ids)
        span = slice(width - length, width) if padding_side == "left" else slice(0, length)
        input_ids[row, span] = torch.tensor(token_ids, dtype=torch.long)
        attention_mask[row, span] = 1
        step_ids[row, span] = torch.tensor(step_of_token, dtype=torch.long)
    num_steps = torch.tensor([len(steps) for steps in step_lists], dtype=torch.long)
    return TokenBatch(input_ids, attention_mask, step_ids >= 0, step_ids, num_steps)


def build_pair_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    append_eos: Sequence[bool],
    max_length: int,
    padding_side: str = "right",
) -> TokenBatch:
    """Tokenise prompt + completion pairs (one step each); see `build_step_batch` for the rules.

    For a preference pair, call it once with the chosen and once with the rejected
    completions (or once on the concatenated lists) and score each with `sequence_logprobs`.
    """
    return build_step_batch(
        tokenizer, prompts, [[completion] for completion in completions], append_eos, max_length, padding_side
    )
