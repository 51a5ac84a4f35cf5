"""Tests of scripts/bench_search.py's bookkeeping (no engine): vLLM counter parsing, per-call
deltas and their sums by role. The benchmark itself runs on the real engine (benchmarks/search.md).

    pytest tests/test_bench_search.py -q
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mcts_po.backends.base import Completion, GenerationRequest, GenerationResult

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_search.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_search_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Metric:  # the fields of vllm.v1.metrics.reader's Counter / Histogram that the script reads
    name: str
    labels: dict = field(default_factory=dict)
    value: int = 0
    count: int = 0
    sum: float = 0.0


class FakeLLM:
    """Counters that move by a fixed amount per generate call, as vLLM's would."""

    def __init__(self):
        self.calls = 0

    def get_metrics(self):
        c = self.calls
        return [
            Metric("vllm:iteration_tokens_total", {"engine": "0"}, count=10 * c, sum=1000.0 * c),
            Metric("vllm:prompt_tokens_by_source", {"source": "local_compute"}, value=70 * c),
            Metric("vllm:prompt_tokens_by_source", {"source": "local_cache_hit"}, value=999 * c),
            Metric("vllm:num_preemptions", {}, value=c // 2),
            Metric("vllm:generation_tokens", {}, value=5 * c),
        ]


class FakeBackend:
    name = "fake"
    model = "fake"

    def __init__(self, llm=None):
        if llm is not None:
            self.llm = llm

    def generate(self, requests):
        if hasattr(self, "llm"):
            self.llm.calls += 1
        return [GenerationResult(completions=[Completion(text="x", num_tokens=2)],
                                 prompt_tokens=8, cached_prompt_tokens=4) for _ in requests]


def test_engine_counters_read_vllm_metric_names_and_sources():
    bench = load_bench()
    llm = FakeLLM()
    llm.calls = 3
    assert bench.engine_counters(FakeBackend(llm)) == {
        "engine_steps": 30, "step_tokens": 3000, "computed_prompt_tokens": 210, "preemptions": 1}
    assert bench.engine_counters(FakeBackend()) is None  # not a vLLM backend

    class StatsOff:
        def get_metrics(self):
            raise AssertionError("Stat logging disabled")

    assert bench.engine_counters(FakeBackend(StatsOff())) is None


def test_timed_backend_records_counter_deltas_per_call_and_sums_them_by_role():
    bench = load_bench()
    timed = bench.TimedBackend(FakeBackend(FakeLLM()))
    expand = GenerationRequest(prompt="p", max_tokens=4, n=1, stop=("\n",))
    rollout = GenerationRequest(prompt="p", max_tokens=4, n=1)
    timed.generate([expand, expand])
    timed.generate([rollout])
    timed.generate([rollout])
    first, second, third = timed.calls
    assert (first.role, first.engine_steps, first.step_tokens, first.computed_prompt_tokens, first.preemptions) == \
        ("expand", 10, 1000, 70, 0)
    assert (second.preemptions, third.preemptions) == (1, 0)  # counter 0 -> 1 -> 1 -> 2 ... by call
    by_role = bench.summarize_calls(timed.calls)
    assert by_role["evaluate"]["engine_steps"] == 20 and by_role["evaluate"]["tokens_per_engine_step"] == 100.0
    assert by_role["expand"]["requests"] == 2 and by_role["expand"]["computed_prompt_tokens"] == 70

    # records made without counters (older results) sum nothing rather than zeros
    plain = bench.TimedBackend(FakeBackend())
    plain.generate([rollout])
    assert plain.calls[0].engine_steps is None
    assert "engine_steps" not in bench.summarize_calls(plain.calls)["evaluate"]
