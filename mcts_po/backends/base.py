"""The backend protocol: the one small interface between mcts_po and an inference engine.

Every backend (vLLM offline, transformers, OpenAI-compatible HTTP) takes a batch of
`GenerationRequest`s and returns one `GenerationResult` per request, in order. A
request asks for `n` samples of a text prompt (already chat-templated: backends do
no prompt formatting of their own), each stopped at one of `stop` strings, at EOS or
at `max_tokens`. Backends report per-token log-probabilities of what they sampled
(for priors) and, when `top_logprobs > 0`, the top alternatives at each position
(for self-evaluation verdicts), plus how many prompt tokens the prefix cache served.
`stats()` returns the backend's cumulative counters (`mcts_po.backends.stats.BackendStats`:
calls, tokens, cache hits, seconds in the engine), which benchmarks read instead of engine
internals.

The search core never sees this module: the LLM layer (`mcts_po.llm`) turns search
requests into these calls.

Helpers every backend shares: `validate_request` (a ValueError naming the bad field) and
`plain_chat` (the chat rendering for models without a template).

    from mcts_po.backends import make_backend
    backend = make_backend("vllm", model="smollm2-135m", seed=0)
    [result] = backend.generate([GenerationRequest(prompt="2+2=", max_tokens=4)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from mcts_po.backends.stats import BackendStats

FINISH_STOP = "stop"  # a stop string matched (the string is not included in `text`)
FINISH_EOS = "eos"  # the model emitted its end-of-sequence token
FINISH_LENGTH = "length"  # max_tokens reached


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_tokens: int = 256
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # >0: also return the top-k alternatives at every generated position
    route_key: str = ""  # requests with the same key go to the same server of a fleet (the LLM layer: the problem id); one-engine backends ignore it


@dataclass
class Completion:
    text: str
    num_tokens: int
    token_logprobs: list[float] = field(default_factory=list)  # of each sampled token
    finish_reason: str = FINISH_STOP  # FINISH_STOP, FINISH_EOS or FINISH_LENGTH
    stop_string: str | None = None  # which stop string matched, when finish_reason == "stop"
    top_logprobs: list[dict[str, float]] = field(default_factory=list)  # per position: token text -> logprob

    @property
    def logprob_sum(self) -> float:
        return float(sum(self.token_logprobs))


@dataclass
class GenerationResult:
    completions: list[Completion]
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache (0 if unknown)


@runtime_checkable
class Backend(Protocol):
    """What the LLM layer needs from an inference engine."""

    name: str
    model: str  # what was asked for (alias, hub id or folder)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One batched call: all requests go to the engine together, results come back in order."""
        ...

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to `messages` (plain concatenation if it has none)."""
        ...

    def stats(self) -> BackendStats:
        """Counters since the backend was built; `stats().since(earlier)` gives one stretch's."""
        ...

    def close(self) -> None:
        ...


def validate_request(request: GenerationRequest) -> None:
    """Raise ValueError naming the bad field of a request (the engine would fail obscurely)."""
    if request.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
    if request.n < 1:
        raise ValueError(f"n must be >= 1, got {request.n}")
    if request.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {request.temperature}")
    if not 0 < request.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {request.top_p}")
    if request.top_logprobs < 0:
        raise ValueError(f"top_logprobs must be >= 0, got {request.top_logprobs}")
    if any(not s for s in request.stop):
        raise ValueError("stop strings must be non-empty")


def plain_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The fallback chat rendering for tokenizers without a template: `role: content` lines."""
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")
