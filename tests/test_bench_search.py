"""Tests of scripts/bench_search.py's bookkeeping (no engine): per-call deltas of `Backend.stats()`
and their sums by role, and where the report goes. The benchmark itself runs on the real engine
(benchmarks/search.md).

    pytest tests/test_bench_search.py -q
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from mcts_po.backends.base import Completion, GenerationRequest, GenerationResult
from mcts_po.backends.stats import StatsCounter

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_search.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_search_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FakeBackend:
    """Each request returns one 2-token sample of an 8-token prompt (4 cached); with `engine`, the
    backend also reports scheduler counters that move by a fixed amount per call, as vLLM's would."""

    name = "fake"
    model = "fake"

    def __init__(self, engine: bool = False):
        self.engine = engine
        self.counter = StatsCounter()

    def generate(self, requests):
        results = [GenerationResult(completions=[Completion(text="x", num_tokens=2)],
                                    prompt_tokens=8, cached_prompt_tokens=4) for _ in requests]
        self.counter.add(results, seconds=0.5)
        return results

    def stats(self):
        c = self.counter.snapshot().calls
        engine = {"engine_steps": 10 * c, "step_tokens": 1000 * c, "computed_prompt_tokens": 70 * c,
                  "preemptions": c // 2}
        return self.counter.snapshot(engine if self.engine else None)


def test_timed_backend_records_counter_deltas_per_call_and_sums_them_by_role():
    bench = load_bench()
    timed = bench.TimedBackend(FakeBackend(engine=True))
    expand = GenerationRequest(prompt="p", max_tokens=4, n=1, stop=("\n",))
    rollout = GenerationRequest(prompt="p", max_tokens=4, n=1)
    timed.generate([expand, expand])
    timed.generate([rollout])
    timed.generate([rollout])
    first, second, third = timed.calls
    assert (first.role, first.requests, first.samples, first.generated_tokens, first.prompt_tokens,
            first.cached_prompt_tokens, first.seconds) == ("expand", 2, 2, 4, 16, 8, 0.5)
    assert (first.engine_steps, first.step_tokens, first.computed_prompt_tokens, first.preemptions) == (10, 1000, 70, 0)
    assert (second.preemptions, third.preemptions) == (1, 0)  # counter 0 -> 1 -> 1 -> 2 ... by call
    assert timed.stats().calls == 3  # the wrapper passes the inner backend's counters through
    by_role = bench.summarize_calls(timed.calls)
    assert by_role["evaluate"]["engine_steps"] == 20 and by_role["evaluate"]["tokens_per_engine_step"] == 100.0
    assert by_role["expand"]["requests"] == 2 and by_role["expand"]["computed_prompt_tokens"] == 70
    assert by_role["evaluate"]["engine_seconds"] == 1.0 and by_role["evaluate"]["cached_prompt_tokens"] == 8

    # a backend without engine counters: records sum nothing rather than zeros
    plain = bench.TimedBackend(FakeBackend())
    plain.generate([rollout])
    assert plain.calls[0].engine_steps is None
    assert "engine_steps" not in bench.summarize_calls(plain.calls)["evaluate"]


def test_one_request_per_call_makes_one_record_per_request():
    bench = load_bench()
    naive = bench.TimedBackend(FakeBackend(engine=True), one_request_per_call=True)
    out = naive.generate([GenerationRequest(prompt="p", max_tokens=4, stop=("\n",))] * 3)
    assert len(out) == 3 and [c.requests for c in naive.calls] == [1, 1, 1]
    assert [c.engine_steps for c in naive.calls] == [10, 10, 10]


def test_report_goes_to_the_work_folder_unless_published(tmp_path):
    bench = load_bench()
    assert bench.report_path(tmp_path, None, publish=False) == tmp_path / "search.md"
    assert bench.report_path(tmp_path, None, publish=True) == bench.REPO / "benchmarks" / "search.md"
    assert bench.report_path(tmp_path, tmp_path / "x.md", publish=False) == tmp_path / "x.md"


def test_report_only_writes_into_the_work_folder(tmp_path):
    """--report-only renders WORK/results.json into WORK/search.md and .json; the committed
    benchmarks/search.md is left alone."""
    bench = load_bench()
    published = bench.REPO / "benchmarks" / "search.md"
    before = published.read_bytes()
    results = {"meta": {"commands": ["(test)"], "compare_scale": 2},
               "naive": {"problems": 1, "num_simulations": 2, "wall_seconds": 4.0, "engine_seconds": 3.5,
                         "engine_calls": 6, "node_expansions": 2, "node_expansions_per_second": 0.5, "nodes": 9,
                         "generated_tokens": 40, "generated_tokens_per_second": 10.0, "by_role": {}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert bench.main(["--work", str(tmp_path), "--report-only"]) == 0
    report = (tmp_path / "search.md").read_text()
    assert "(test)" in report and bench.HAND_WRITTEN_MARKER in report
    assert json.loads((tmp_path / "search.json").read_text()) == results
    assert published.read_bytes() == before
