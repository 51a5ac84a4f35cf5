"""transformers backend: batched sampling with a hand-written decode loop over `model.forward`.

Use it where vLLM is not available, or as a reference implementation of the protocol:

    from mcts_po.backends import make_backend
    backend = make_backend("transformers", model="smollm2-135m", seed=0)
    [result] = backend.generate([GenerationRequest(prompt="2+2=", max_tokens=8, n=4, stop=("\\n\\n",))])

Why a hand-written loop rather than `model.generate`: one engine call carries requests with
different temperatures, top_p, max_tokens and stop strings, and each needs exact per-token
log-probabilities; `generate` takes one configuration per call. The loop is the usual one:
left-padded prompts (pad token = EOS when the tokenizer has none), explicit position ids,
a `DynamicCache`, one token per step for every unfinished row; finished rows are dropped
from the batch (and the cache) as soon as they finish.

How requests become batch rows: every request contributes `n` rows (one row when
`temperature == 0`: greedy samples are identical, so one is computed and copied). Rows are
sorted by prompt length (stable, so the samples of one request stay adjacent and in order)
and cut into chunks of `max_batch_size`. Within a chunk each distinct prompt is run through
the model once and its KV cache is copied to its sample rows.

Rules this backend follows (the other backends follow the same ones):
- Log-probabilities are those of the model's *untempered* distribution: `log_softmax` of
  the raw logits in float32, whatever temperature / top_p the token was sampled with
  (vLLM's default `raw_logprobs` mode reports the same quantity). `top_logprobs[i]` maps the
  decoded text of each of the k most likely tokens at position i to that log-probability
  (when two token ids decode to the same text, the more likely one is kept).
- Sampling: temperature 0 is greedy (argmax); otherwise softmax(logits / T), restricted to
  the smallest set of most likely tokens whose mass reaches top_p, sampled with a
  `torch.Generator` seeded from the engine seed. Results depend only on the seed and the
  sequence of calls (same seed + same calls -> identical outputs; greedy ignores the seed).
- Stop strings are matched in the decoded completion (special tokens skipped) after every
  generated token, as vLLM does: the first token whose text completes a stop string ends
  the sample (when several complete at once, the one ending earliest wins; ties go to the
  one listed first). The returned text is everything before the stop string
  (finish_reason "stop", `stop_string` set). Token rule (vLLM's): `num_tokens` counts every
  generated token up to and including the one that completed the stop string, and
  `token_logprobs` / `top_logprobs` have one entry per counted token. So a step that ends
  at a newline reports the newline token too (its log-probability is the model's
  probability of ending the step there), exactly like the vLLM and HTTP backends.
- EOS (any of the model's end-of-sequence ids) ends a sample with finish_reason "eos";
  the EOS token is not counted and its log-probability is not reported.
- max_tokens counts generated tokens; reaching it without a stop string or EOS gives
  finish_reason "length".
- No prefix cache: `cached_prompt_tokens` is always 0. `prompt_tokens` is the length of
  the tokenized prompt (the tokenizer's default special tokens, as vLLM does).
- `stats()` counts calls, requests, samples, generated and prompt tokens (cached: 0) and the
  seconds inside `generate`; there are no engine scheduler counters (None).

Device: CUDA when available, else CPU (or `device=`). dtype "auto" is bfloat16 on CUDA and on
CPUs with native bf16 instructions (avx512_bf16 / AMX: 2-3x faster than float32 for SmolLM2,
whose converted weights are bf16 anyway; vLLM's CPU engine runs bf16 too), else float32.
Pass dtype="float32" for log-probabilities exact to 1e-5 (the tests do).

Cost note: there is no prefix cache, so every call prefills every distinct prompt in full;
on a CPU the prefill of a search wave's self-evaluation and rollout prompts dominates. Use
vLLM (offline or `vllm serve`) for large searches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from mcts_po.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    GenerationRequest,
    GenerationResult,
    plain_chat,
    validate_request,
)
from mcts_po.backends.stats import BackendStats, StatsCounter
from mcts_po.precision import cpu_has_native_bf16
from mcts_po.io_utils import UserError, common_prefix_length
from mcts_po.models import resolve_model

logger = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float32", "float16")


def shared_prefix_groups(prompts: Sequence[Sequence[int]], minimum: int) -> list[tuple[list[int], int]]:
    """Runs of consecutive prompts worth prefilling a common prefix for, as (indices, prefix length).

    Neighbours join a run when they share at least `minimum` tokens and at least half the
    shorter one (prompts sorted by tokens put one problem's states side by side). A run's
    prefix is what all its prompts share, less one token so that each prompt keeps an own
    last position; it is 0 (no first pass) when shorter than `minimum`.
    """
    runs: list[tuple[list[int], int]] = []
    for i, prompt in enumerate(prompts):
        if runs:
            indices, length = runs[-1]
            previous = prompts[indices[-1]]
            common = common_prefix_length(previous, prompt)
            if common >= minimum and 2 * common >= min(len(previous), len(prompt)):
                runs[-1] = (indices + [i], min(length, common))
                continue
        runs.append(([i], len(prompt)))
    groups = []
    for indices, length in runs:
        length = min(length, min(len(prompts[i]) for i in indices) - 1)
        groups.append((indices, length if length >= max(minimum, 1) else 0))
    return groups


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """The stop string that completes earliest in `text`, as (start index, stop); ties go to the first listed.

    Called after every generated token on the whole decoded completion: no stop string was
    complete before this token, so any match ends inside the newest token's text.
    """
    best: tuple[int, str] | None = None
    best_end = None
    for stop in stops:
        index = text.find(stop)
        if index >= 0 and (best_end is None or index + len(stop) < best_end):
            best, best_end = (index, stop), index + len(stop)
    return best


@dataclass
class _Row:
    """One sample being generated: which request it answers, its prompt ids and what it produced."""

    request_index: int
    request: GenerationRequest
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_values: list[list[float]] = field(default_factory=list)
    finish_reason: str | None = None
    stop: tuple[int, str] | None = None  # (index in decoded text, stop string)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model: str,
        seed: int = 0,
        dtype: str = "auto",
        device: str | None = None,
        max_batch_size: int = 32,
        min_shared_prefix: int = 16,
        **_: Any,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise UserError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if max_batch_size < 1:
            raise UserError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.model_path = resolve_model(model)
        self.seed = seed
        self.max_batch_size = max_batch_size
        self.min_shared_prefix = min_shared_prefix  # shorter common prefixes are not worth a separate pass
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" or cpu_has_native_bf16() else "float32"
        self.dtype = getattr(torch, dtype)

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer.padding_side = "left"
        self.hf_model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        self.hf_model.to(self.device)
        self.hf_model.eval()

        self.eos_token_ids = self._eos_token_ids()
        if not self.eos_token_ids:
            raise UserError(f"model {model!r} defines no EOS token; cannot tell when a sample ends")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(self.eos_token_ids[0])
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._token_text: dict[int, str] = {}
        self._counter = StatsCounter()

    def _eos_token_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.hf_model.generation_config, "eos_token_id", None)
        if configured is not None:
            ids.extend([configured] if isinstance(configured, int) else list(configured))
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return list(dict.fromkeys(int(i) for i in ids))

    # ---------------------------------------------------------------- protocol

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return plain_chat(messages, add_generation_prompt)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        import torch

        for request in requests:
            validate_request(request)
        started = time.perf_counter()
        prompt_ids = [self.tokenizer(r.prompt).input_ids for r in requests]
        rows = [
            _Row(request_index=i, request=r, prompt_ids=prompt_ids[i])
            for i, r in enumerate(requests)
            for _ in range(r.n if r.temperature > 0 else 1)
        ]
        # Sorted by prompt tokens (stable: samples of one request stay adjacent and in order), so a
        # chunk holds prompts that share long prefixes (one problem's states, its self-evaluations).
        ordered = sorted(rows, key=lambda row: row.prompt_ids)
        with torch.inference_mode():
            for start in range(0, len(ordered), self.max_batch_size):
                self._run_chunk(ordered[start : start + self.max_batch_size])

        completions: list[list[Completion]] = [[] for _ in requests]
        for row in rows:  # original order
            completions[row.request_index].append(self._completion(row))
        results = []
        for i, request in enumerate(requests):
            samples = completions[i]
            if request.temperature <= 0:
                samples = [samples[0]] + [_copy(samples[0]) for _ in range(request.n - 1)]
            results.append(GenerationResult(completions=samples, prompt_tokens=len(prompt_ids[i])))
        self._counter.add(results, time.perf_counter() - started)
        return results

    def stats(self) -> BackendStats:
        return self._counter.snapshot()

    def reseed(self, seed: int) -> None:
        """Restart the sampling stream from `seed` (the search runner reseeds before each chunk
        of problems, so a resumed run reproduces an uninterrupted one)."""
        self.generator.manual_seed(int(seed))

    def close(self) -> None:
        self.hf_model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    # ---------------------------------------------------------------- decode loop

    def _run_chunk(self, rows: list[_Row]) -> None:
        """Generate every row of one chunk to completion (in place)."""
        import torch
        from transformers import DynamicCache

        device = self.device
        # Each distinct prompt is prefilled once; its cache is copied to its rows. Prompts that
        # share a long prefix (one problem's states; its self-evaluations) form a group whose
        # prefix is prefilled once (first pass, one row per group, left-padded) and copied to the
        # group's prompts; the second pass runs each prompt's own suffix after it:
        # [pad][group prefix][pad][own suffix], pads masked, positions counted without pads.
        distinct: dict[tuple[int, ...], int] = {}
        row_to_prompt = [distinct.setdefault(tuple(row.prompt_ids), len(distinct)) for row in rows]
        prompts = list(distinct)
        groups = shared_prefix_groups(prompts, self.min_shared_prefix)
        prefix_length = [0] * len(prompts)
        group_of = [0] * len(prompts)
        for g, (indices, length) in enumerate(groups):
            for i in indices:
                prefix_length[i], group_of[i] = length, g
        cache = DynamicCache(config=self.hf_model.config)
        widest_prefix = max(prefix_length)
        prefix_mask = torch.zeros((len(prompts), widest_prefix), dtype=torch.long, device=device)
        if widest_prefix:
            prefix_ids = torch.full((len(groups), widest_prefix), self.pad_token_id, dtype=torch.long)
            group_mask = torch.zeros((len(groups), widest_prefix), dtype=torch.long)
            for g, (indices, length) in enumerate(groups):
                if length:
                    prefix_ids[g, widest_prefix - length :] = torch.tensor(prompts[indices[0]][:length])
                    group_mask[g, widest_prefix - length :] = 1
            prefix_ids, group_mask = prefix_ids.to(device), group_mask.to(device)
            self.hf_model(input_ids=prefix_ids, attention_mask=group_mask,
                          position_ids=(group_mask.cumsum(-1) - 1).clamp(min=0),
                          past_key_values=cache, use_cache=True, logits_to_keep=1)
            expand_groups = torch.tensor(group_of, dtype=torch.long, device=device)
            cache.batch_select_indices(expand_groups)
            prefix_mask = group_mask.index_select(0, expand_groups)
        width = max(len(p) - k for p, k in zip(prompts, prefix_length))
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        own = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (prompt, k) in enumerate(zip(prompts, prefix_length)):
            input_ids[i, width - (len(prompt) - k) :] = torch.tensor(prompt[k:], dtype=torch.long)
            own[i, width - (len(prompt) - k) :] = 1
        input_ids, own = input_ids.to(device), own.to(device)
        attention = torch.cat([prefix_mask, own], dim=1)
        offsets = torch.tensor(prefix_length, dtype=torch.long, device=device).unsqueeze(1)
        positions = offsets + (own.cumsum(-1) - 1).clamp(min=0)
        output = self.hf_model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        expand = torch.tensor(row_to_prompt, dtype=torch.long, device=device)
        cache.batch_select_indices(expand)
        logits = output.logits[:, -1, :].float().index_select(0, expand)
        attention = attention.index_select(0, expand)
        next_position = positions[:, -1].index_select(0, expand) + 1

        active = list(range(len(rows)))  # indices into `rows` of the unfinished rows, in batch order
        temperatures = torch.tensor([r.request.temperature for r in rows], dtype=torch.float32, device=device)
        top_ps = torch.tensor([r.request.top_p for r in rows], dtype=torch.float32, device=device)
        max_top_k = max(r.request.top_logprobs for r in rows)
        eos = set(self.eos_token_ids)

        while True:
            index = torch.tensor(active, dtype=torch.long, device=device)
            logprobs = torch.log_softmax(logits, dim=-1)
            tokens = sample_tokens(logits, temperatures[index], top_ps[index], self.generator)
            chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
            tokens_list = tokens.tolist()
            chosen_list = chosen.tolist()
            if max_top_k > 0:
                top = logprobs.topk(max_top_k, dim=-1)
                top_values, top_ids = top.values.tolist(), top.indices.tolist()
            keep: list[int] = []
            for slot, row_index in enumerate(active):
                row = rows[row_index]
                token = tokens_list[slot]
                if token in eos:
                    row.finish_reason = FINISH_EOS
                    continue
                row.token_ids.append(token)
                row.token_logprobs.append(chosen_list[slot])
                k = row.request.top_logprobs
                if k > 0:
                    row.top_ids.append(top_ids[slot][:k])
                    row.top_values.append(top_values[slot][:k])
                if row.request.stop:
                    found = find_stop(self._decode(row.token_ids), row.request.stop)
                    if found is not None:
                        row.finish_reason, row.stop = FINISH_STOP, found
                        continue
                if len(row.token_ids) >= row.request.max_tokens:
                    row.finish_reason = FINISH_LENGTH
                    continue
                keep.append(slot)
            if not keep:
                return
            if len(keep) < len(active):
                kept = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(kept)
                attention = attention.index_select(0, kept)
                next_position = next_position.index_select(0, kept)
                tokens = tokens.index_select(0, kept)
                active = [active[slot] for slot in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            output = self.hf_model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=attention,
                position_ids=next_position.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            logits = output.logits[:, -1, :].float()
            next_position = next_position + 1

    # ---------------------------------------------------------------- results

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _text_of_token(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._token_text[token_id] = text
        return text

    def _completion(self, row: _Row) -> Completion:
        text = self._decode(row.token_ids)
        num_tokens = len(row.token_ids)
        stop_string = None
        if row.finish_reason == FINISH_STOP:
            index, stop_string = row.stop
            text = text[:index]
        top: list[dict[str, float]] = []
        for ids, values in zip(row.top_ids[:num_tokens], row.top_values[:num_tokens]):
            position: dict[str, float] = {}
            for token_id, value in zip(ids, values):
                position.setdefault(self._text_of_token(token_id), value)
            top.append(position)
        return Completion(
            text=text,
            num_tokens=num_tokens,
            token_logprobs=row.token_logprobs[:num_tokens],
            finish_reason=row.finish_reason,
            stop_string=stop_string,
            top_logprobs=top,
        )


def sample_tokens(logits, temperatures, top_ps, generator):
    """One token per row: argmax where temperature is 0, else top-p sampling from softmax(logits/T).

    `logits` is [rows, vocab] float32; the random draw uses `generator` for every row (greedy
    rows included) so the stream of random numbers depends only on the batch shape.
    """
    import torch

    greedy = temperatures <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperatures), temperatures).unsqueeze(1)
    probs = torch.softmax(scaled, dim=-1)
    if bool((top_ps < 1).any()):
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_ps.unsqueeze(1), 0.0)
        probs = torch.zeros_like(probs).scatter(1, sorted_ids, sorted_probs)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def _copy(completion: Completion) -> Completion:
    return Completion(
        text=completion.text,
        num_tokens=completion.num_tokens,
        token_logprobs=list(completion.token_logprobs),
        finish_reason=completion.finish_reason,
        stop_string=completion.stop_string,
        top_logprobs=[dict(p) for p in completion.top_logprobs],
    )
