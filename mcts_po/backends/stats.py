"""Counters a backend keeps about its own engine calls, read with `backend.stats()`.

Every backend (`vllm`, `transformers`, `http`) counts, from the moment it is built, what its
`generate` calls asked and returned: calls, requests, samples, generated tokens (the sum of the
returned `Completion.num_tokens`), prompt tokens, prompt tokens served from the prefix cache,
and the seconds spent inside `generate` (in the engine, or waiting for the server). The vLLM
offline backend adds vLLM's own scheduler counters when its engine keeps statistics
(built with `disable_log_stats=False`). The counters are cumulative; a caller that wants one
call's figures takes the difference:

    before = backend.stats()
    results = backend.generate(requests)
    call = backend.stats().since(before)   # call.generated_tokens == sum of the returned num_tokens

`None` means "this engine does not report it" (never a silent 0): `cached_prompt_tokens` for an
HTTP server that sends no `usage.prompt_tokens_details`; the engine counters everywhere but in
a vLLM offline engine with statistics on. Pure Python: the search core may import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

# vLLM's scheduler counters (VLLMBackend with disable_log_stats=False; None elsewhere)
ENGINE_COUNTERS = ("engine_steps", "step_tokens", "computed_prompt_tokens", "preemptions")


@dataclass(frozen=True)
class BackendStats:
    """Cumulative counters of one backend since it was built (see the module docstring)."""

    calls: int = 0  # generate() calls with at least one request
    requests: int = 0
    samples: int = 0  # completions returned (greedy copies included)
    generated_tokens: int = 0  # sum of the returned Completion.num_tokens
    prompt_tokens: int = 0  # sum of GenerationResult.prompt_tokens
    cached_prompt_tokens: int | None = 0  # of those, served from the prefix cache; None: not reported
    engine_seconds: float = 0.0  # wall seconds inside generate()
    engine_steps: int | None = None  # vLLM scheduler iterations (each prefills and/or decodes a batch)
    step_tokens: int | None = None  # tokens those iterations processed (prefill + decode)
    computed_prompt_tokens: int | None = None  # prompt tokens vLLM prefilled, not taken from its cache
    preemptions: int | None = None  # requests vLLM evicted for KV-cache space and recomputed

    def since(self, earlier: "BackendStats") -> "BackendStats":
        """The counts added after `earlier` (a snapshot of the same backend); None stays None."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            now, then = getattr(self, item.name), getattr(earlier, item.name)
            values[item.name] = None if now is None or then is None else now - then
        return BackendStats(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class StatsCounter:
    """What a backend adds each `generate` call to; `snapshot()` gives the `BackendStats`.

    `reports_cache=False` makes `cached_prompt_tokens` None until `cache_reported()` is called
    (the HTTP backend calls it when a server answer carries the cached-token count)."""

    def __init__(self, reports_cache: bool = True):
        self._totals = BackendStats()
        self._reports_cache = reports_cache

    def cache_reported(self) -> None:
        self._reports_cache = True

    def add(self, results: Sequence[Any], seconds: float) -> None:
        """Count one generate call: its `GenerationResult`s and the seconds it took."""
        if not results:
            return
        t = self._totals
        self._totals = dataclasses.replace(
            t,
            calls=t.calls + 1,
            requests=t.requests + len(results),
            samples=t.samples + sum(len(r.completions) for r in results),
            generated_tokens=t.generated_tokens + sum(c.num_tokens for r in results for c in r.completions),
            prompt_tokens=t.prompt_tokens + sum(r.prompt_tokens for r in results),
            cached_prompt_tokens=t.cached_prompt_tokens + sum(r.cached_prompt_tokens for r in results),
            engine_seconds=t.engine_seconds + float(seconds),
        )

    def snapshot(self, engine: dict[str, int] | None = None) -> BackendStats:
        """The totals so far, with the engine's own counters (`ENGINE_COUNTERS` keys) when given."""
        stats = self._totals
        if not self._reports_cache:
            stats = dataclasses.replace(stats, cached_prompt_tokens=None)
        if engine is not None:
            stats = dataclasses.replace(stats, **{key: int(engine[key]) for key in ENGINE_COUNTERS})
        return stats
