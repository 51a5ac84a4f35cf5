"""Tests of the progress bars (mcts_po/progress.py and its users: search, evaluation, the loop).

A scripted backend (no model) answers the search and the evaluation; its calls advance a fake
clock by one second each, so the tokens per second a bar shows are exact (tokens generated /
calls made). Checked: the search bar's postfix (tok/s, problems done, problems with a correct
terminal) and total on a fresh and on a resumed run; the evaluation bar's running accuracy and
tok/s; the loop's bar over rounds x phases with the phase bars nested below it; no bar at all
with `--no-progress` / `progress=False` on a terminal, and none when stderr is not a terminal.

    .venv/bin/pytest -q tests/test_progress.py
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from mcts_po import progress as progress_module
from mcts_po.backends.base import FINISH_EOS, FINISH_STOP, Completion, GenerationResult
from mcts_po.progress import Rate, StageBar, bars_enabled, progress_bar
from mcts_po.tasks import get_task

EXPAND_TOKENS, VERDICT_TOKENS, ROLLOUT_TOKENS, GREEDY_TOKENS = 6, 1, 9, 7


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class ScriptedBackend:
    """Demo-task problems by their question: steps "Step d: ..." whose depth-2 step answers —
    with the gold answer on the problems listed in `solvable`, with 0 on the others; verdicts
    0.6 Yes; rollouts and greedy decodes answer 0. Every generate call moves `clock` by 1 s and
    the tokens it returns are counted."""

    name = "scripted"
    model = "scripted"

    def __init__(self, problems, solvable: set[str], clock: FakeClock | None = None):
        self.gold = {p.question: (p.id, p.answer) for p in problems}
        self.solvable = solvable
        self.clock = clock
        self.calls = 0
        self.generated = 0

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")

    def _problem(self, prompt: str) -> tuple[str, str]:
        for question, value in self.gold.items():
            if question in prompt:
                return value
        raise AssertionError(f"unknown prompt {prompt[:80]!r}")

    def generate(self, requests) -> list[GenerationResult]:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += 1.0
        out = []
        for r in requests:
            if r.top_logprobs:
                completions = [Completion(" Yes", VERDICT_TOKENS, [math.log(0.6)],
                                          top_logprobs=[{" Yes": math.log(0.6), " No": math.log(0.4)}])]
            elif r.stop:
                problem_id, gold = self._problem(r.prompt)
                depth = r.prompt.count(r.stop[0] + "Step") + 1
                answer = gold if problem_id in self.solvable else "0"
                text = f"Step {depth}: work." + (f" The answer is {answer}." if depth >= 2 else "")
                completions = [Completion(text, EXPAND_TOKENS, [-0.1 * (i + 1)] * EXPAND_TOKENS, FINISH_STOP, r.stop[0])
                               for i in range(r.n)]
            elif r.temperature == 0:
                completions = [Completion("The answer is 0.", GREEDY_TOKENS, [-0.1] * GREEDY_TOKENS, FINISH_EOS)]
            else:
                completions = [Completion("So the answer is 0.", ROLLOUT_TOKENS, [-0.3] * ROLLOUT_TOKENS, FINISH_EOS)
                               for _ in range(r.n)]
            self.generated += sum(c.num_tokens for c in completions)
            out.append(GenerationResult(completions=completions, prompt_tokens=len(r.prompt)))
        return out

    def close(self):
        pass


class RecordingBar:
    """Stands in for the tqdm bar: records the total, the updates and every postfix."""

    def __init__(self, progress, *, total=None, desc="", unit="it", initial=0, stream=None):
        self.on, self.total, self.desc, self.initial = progress, total, desc, initial
        self.n = initial
        self.postfixes: list[dict] = []
        self.closed = False

    def update(self, n=1):
        self.n += n

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfixes.append(dict(ordered_dict or {}, **kwargs))

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def no_bar_left_open():
    """A failed test must not leave its bars in the helper's list of open bars."""
    yield
    progress_module._open_bars.clear()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "now", fake)
    return fake


@pytest.fixture
def bars(monkeypatch) -> list[RecordingBar]:
    made: list[RecordingBar] = []

    def factory(*args, **kwargs):
        made.append(RecordingBar(*args, **kwargs))
        return made[-1]

    import mcts_po.evaluation
    import mcts_po.search_runner

    monkeypatch.setattr(mcts_po.search_runner, "progress_bar", factory)
    monkeypatch.setattr(mcts_po.evaluation, "progress_bar", factory)
    return made


DEMO = get_task("demo").load(split="test", limit=5)
SOLVABLE = {"demo-001", "demo-002", "demo-004"}  # in chunks of 2: 2 in the first, 1 in the second, 0 in the last
SIMULATIONS = 4


def search_job(out: Path, progress: bool = True, limit: int = 5):
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob

    return SearchJob(out=str(out), task="demo", limit=limit, model="scripted", backend="transformers",
                     search=SearchConfig(num_simulations=SIMULATIONS, num_children=2, leaves_per_wave=2, max_depth=3),
                     problems_in_flight=2, greedy_baseline=True, greedy_max_tokens=8, progress=progress)


def tokens_per_second(postfix: dict) -> float:
    return float(postfix["tok/s"])


# ------------------------------------------------------------------ the helper


def test_rate_is_the_count_over_the_seconds_since_it_started():
    clock = FakeClock(50.0)
    rate = Rate(clock)
    assert rate.per_second(100) is None and rate.format(100) == "-"  # no time passed yet
    clock.now = 54.0
    assert rate.per_second(1000) == 250.0 and rate.format(1000) == "250"
    assert rate.format(10) == "2.5"


def test_bars_show_only_with_progress_on_and_a_terminal():
    assert bars_enabled(True, TTY()) is True
    assert bars_enabled(False, TTY()) is False
    assert bars_enabled(True, io.StringIO()) is False
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    assert bars_enabled(True, closed) is False
    assert bars_enabled(True, object()) is False  # no isatty at all
    for stream, progress in ((io.StringIO(), True), (TTY(), False)):
        bar = progress_bar(progress, total=3, desc="x", stream=stream)
        bar.update(3)
        bar.set_postfix({"a": 1})
        bar.close()
        assert stream.getvalue() == ""
    shown = TTY()
    bar = progress_bar(True, total=3, desc="shown", stream=shown)
    bar.update(3)
    bar.close()
    assert "shown" in shown.getvalue() and "3/3" in shown.getvalue()


def test_bars_made_while_one_is_open_go_below_it_and_are_erased():
    stream = TTY()
    outer = StageBar(True, total=2, desc="loop", stream=stream)
    assert (outer.bar.pos, outer.bar.leave) == (0, True)
    outer.begin("round 0 search")
    inner = progress_bar(True, total=4, desc="search", stream=stream)
    assert (abs(inner.pos), inner.leave) == (1, False)
    inner.close()
    assert progress_module.bars_open() == 1
    outer.begin("round 0 eval")
    assert outer.bar.n == 1 and outer.bar.desc == "loop round 0 eval: "
    outer.finish()
    assert outer.bar.n == 2
    outer.close()
    assert progress_module.bars_open() == 0


# ------------------------------------------------------------------ search


def test_search_bar_shows_exact_tokens_per_second_done_and_solved(tmp_path, clock, bars):
    from mcts_po.search_runner import run_search_job

    backend = ScriptedBackend(DEMO, SOLVABLE, clock)
    summary = run_search_job(search_job(tmp_path / "run"), backend=backend)
    [bar] = bars
    assert bar.on is True and bar.closed
    assert bar.total == 5 * SIMULATIONS and bar.n == bar.total  # every simulation, none twice
    last = bar.postfixes[-1]
    assert last["done"] == "5/5"
    assert last["solved"] == summary["problems_with_correct_terminal"] == 3
    # the fake clock moved 1 s per engine call: tok/s = tokens the backend returned / its calls
    assert tokens_per_second(last) == pytest.approx(backend.generated / backend.calls, abs=0.05)
    assert backend.generated == summary["generated_tokens"] + 5 * GREEDY_TOKENS  # search + greedy baselines
    # chunks of 2 (4 waves each here): problems finish 2, 4, 5; solved counts every tree with a
    # correct terminal, in flight too (demo-001/-002 at the first chunk's 2nd wave, demo-004 in chunk 2)
    assert [(p["done"], p["solved"]) for p in bar.postfixes] == [
        ("0/5", 0), ("0/5", 2), ("0/5", 2), ("2/5", 2), ("2/5", 2), ("2/5", 3), ("2/5", 3),
        ("4/5", 3), ("4/5", 3), ("4/5", 3), ("4/5", 3), ("5/5", 3)]
    assert [p["solved"] for p in bar.postfixes] == sorted(p["solved"] for p in bar.postfixes)


def test_resumed_search_bar_counts_the_partly_written_chunk_whole(tmp_path, clock, bars):
    """Kill after 3 of 5 trees (chunk 2 half written): the rerun searches chunk 2 whole and chunk
    3, so the bar's total (and its ETA) is over 3 trees' simulations, and done starts at 3/5."""
    from mcts_po.search_runner import run_search_job

    full = tmp_path / "full"
    run_search_job(search_job(full), backend=ScriptedBackend(DEMO, SOLVABLE, clock))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(full / "run_config.json", resumed / "run_config.json")
    shutil.copy(full / "greedy.jsonl", resumed / "greedy.jsonl")
    lines = (full / "trees.jsonl").read_text().splitlines(keepends=True)
    (resumed / "trees.jsonl").write_text("".join(lines[:3]))
    backend = ScriptedBackend(DEMO, SOLVABLE, clock)
    summary = run_search_job(search_job(resumed), backend=backend)
    bar = bars[-1]
    assert bar.total == 3 * SIMULATIONS and bar.n == bar.total
    assert bar.postfixes[0]["done"] == "3/5" and bar.postfixes[0]["solved"] >= 2  # demo-001, -002 resumed
    assert bar.postfixes[-1]["done"] == "5/5" and bar.postfixes[-1]["solved"] == summary["problems_with_correct_terminal"] == 3
    assert tokens_per_second(bar.postfixes[-1]) == pytest.approx(backend.generated / backend.calls, abs=0.05)


def test_search_on_a_terminal_draws_the_figures_and_no_progress_draws_nothing(tmp_path, monkeypatch, clock):
    from mcts_po.search_runner import run_search_job

    tty = TTY()
    monkeypatch.setattr("sys.stderr", tty)
    run_search_job(search_job(tmp_path / "on"), backend=ScriptedBackend(DEMO, SOLVABLE, clock))
    final = tty.getvalue().replace("\n", "\r").split("\r")
    drawn = [line for line in final if line.startswith("search")][-1]
    assert f"{5 * SIMULATIONS}/{5 * SIMULATIONS}" in drawn
    assert re.search(r"done=5/5, solved=3\b", drawn) and "tok/s=" in drawn
    quiet = TTY()
    monkeypatch.setattr("sys.stderr", quiet)
    run_search_job(search_job(tmp_path / "off", progress=False), backend=ScriptedBackend(DEMO, SOLVABLE, clock))
    assert quiet.getvalue() == ""


def test_search_cli_writes_no_bar_when_stderr_is_not_a_terminal_or_with_no_progress(tmp_path, monkeypatch, capsys):
    import mcts_po.backends
    from mcts_po.cli import main

    monkeypatch.setattr(mcts_po.backends, "make_backend", lambda *a, **k: ScriptedBackend(DEMO, SOLVABLE))
    flags = ["search", "--task", "demo", "--limit", "3", "--num-simulations", "2", "--problems-in-flight", "2"]
    def result_line(out: Path) -> str:  # what `mcts-po search` always prints to stderr
        return f"trees: {out}/trees.jsonl  summary: {out}/summary.json\n"

    assert main([*flags, "--out", str(tmp_path / "piped")]) == 0  # capsys: stderr is not a terminal
    assert capsys.readouterr().err == result_line(tmp_path / "piped")
    tty = TTY()
    monkeypatch.setattr("sys.stderr", tty)
    assert main([*flags, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert tty.getvalue() == result_line(tmp_path / "quiet")
    assert main([*flags, "--out", str(tmp_path / "shown")]) == 0
    assert "search" in tty.getvalue() and "solved=" in tty.getvalue()


# ------------------------------------------------------------------ evaluation


def eval_config(**overrides):
    from mcts_po.evaluation import EvalConfig

    values = dict(model="scripted", task="demo", split="test", limit=5, backend="transformers", chunk_size=2,
                  max_tokens=16)
    values.update(overrides)
    return EvalConfig(**values)


class EvalBackend(ScriptedBackend):
    """Greedy: the gold answer on the solvable problems; samples: the gold answer in 2 of 3 on
    demo-003 only, 0 elsewhere."""

    def generate(self, requests):
        self.calls += 1
        self.clock.now += 1.0
        out = []
        for r in requests:
            problem_id, gold = self._problem(r.prompt)
            if r.temperature == 0:
                texts = [f"The answer is {gold if problem_id in self.solvable else 0}."]
            else:
                texts = [f"The answer is {gold if problem_id == 'demo-003' and s < 2 else 0}." for s in range(r.n)]
            completions = [Completion(t, GREEDY_TOKENS + i, [-0.1], FINISH_EOS) for i, t in enumerate(texts)]
            self.generated += sum(c.num_tokens for c in completions)
            out.append(GenerationResult(completions=completions, prompt_tokens=len(r.prompt)))
        return out


def test_eval_bar_shows_running_accuracy_and_exact_tokens_per_second(tmp_path, clock, bars):
    from mcts_po.evaluation import evaluate_model

    backend = EvalBackend(DEMO, SOLVABLE, clock)
    summary = evaluate_model(eval_config(k=3, temperature=0.7), tmp_path / "ev", backend=backend)
    [bar] = bars
    assert bar.total == 5 and bar.n == 5 and bar.closed
    # chunks of 2, 2, 1: greedy right on demo-001, -002 | -004 | -; maj@3 right on demo-003 only
    assert [p["greedy"] for p in bar.postfixes] == ["1.000", "0.750", "0.600"]
    assert [p["maj@3"] for p in bar.postfixes] == ["0.000", "0.250", "0.200"]
    assert bar.postfixes[-1]["greedy"] == f"{summary['greedy']['accuracy']:.3f}"
    assert tokens_per_second(bar.postfixes[-1]) == pytest.approx(backend.generated / backend.calls, abs=0.05)
    assert summary["generated_tokens"] == backend.generated


def test_resumed_eval_bar_starts_at_the_finished_problems_and_rates_only_this_run(tmp_path, clock, bars):
    from mcts_po.evaluation import PARTIAL_FILE, RESULTS_FILE, SUMMARY_FILE, evaluate_model

    out = tmp_path / "ev"
    evaluate_model(eval_config(), out, backend=EvalBackend(DEMO, SOLVABLE, clock))
    records = (out / RESULTS_FILE).read_text().splitlines(keepends=True)
    (out / PARTIAL_FILE).write_text("".join(records[:3]))
    (out / RESULTS_FILE).unlink()
    (out / SUMMARY_FILE).unlink()
    backend = EvalBackend(DEMO, SOLVABLE, clock)
    evaluate_model(eval_config(), out, backend=backend)
    bar = bars[-1]
    assert (bar.initial, bar.total, bar.n) == (3, 5, 5)
    assert [p["greedy"] for p in bar.postfixes] == ["0.600"]  # 3 right of 5, resumed ones included
    assert tokens_per_second(bar.postfixes[-1]) == pytest.approx(backend.generated / backend.calls, abs=0.05)


def test_eval_cli_with_no_progress_writes_only_its_result_line_to_stderr(tmp_path, monkeypatch, clock):
    import mcts_po.backends
    from mcts_po.cli import main

    monkeypatch.setattr(mcts_po.backends, "make_backend", lambda *a, **k: EvalBackend(DEMO, SOLVABLE, clock))
    tty = TTY()
    monkeypatch.setattr("sys.stderr", tty)
    flags = ["eval", "--task", "demo", "--limit", "3", "--model", "m", "--backend", "transformers"]
    assert main([*flags, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert tty.getvalue() == f"results: {tmp_path / 'quiet'}/results.jsonl  summary: {tmp_path / 'quiet'}/summary.json\n"
    assert main([*flags, "--out", str(tmp_path / "shown")]) == 0
    assert "greedy=" in tty.getvalue() and "tok/s=" in tty.getvalue()


# ------------------------------------------------------------------ the loop


class BarPhases:
    """Loop phases (no model) that open a bar of their own, as search and evaluation do."""

    def __init__(self, stream):
        self.stream = stream
        self.inner: list[tuple[str, int, bool]] = []  # (loop bar's label, inner bar position, leave)

    def _work(self, name, out: Path) -> None:
        [loop] = [b for b in progress_module._open_bars if b.desc.startswith("loop")]
        bar = progress_bar(True, total=2, desc=name, stream=self.stream)
        self.inner.append((loop.desc.rstrip(": "), abs(bar.pos), bar.leave))
        bar.update(2)
        bar.close()
        out.mkdir(parents=True, exist_ok=True)

    def search(self, k, policy, out):
        self._work("search", out)
        (out / "trees.jsonl").write_text("{}\n")
        return {"problems": 1}

    def extract(self, k, trees_dir, out):
        self._work("extract", out)
        return {"rows": 1}

    def train(self, k, policy, reference, data_dir, out):
        self._work("train", out)
        return {"policy": f"{policy}+r{k}"}

    def evaluate(self, policy, out):
        self._work("eval", out)
        return {"accuracy": 0.5, "correct": 1, "problems": 2, "ci95": [0.1, 0.9]}

    def close(self):
        pass


def test_loop_bar_steps_through_rounds_and_phases_with_the_phase_bars_below(tmp_path, monkeypatch):
    from mcts_po.loop import LoopConfig, run_loop

    tty = TTY()
    monkeypatch.setattr("sys.stderr", tty)
    phases = BarPhases(tty)
    config = LoopConfig(rounds=2, model="m0", problems_per_round=1, eval_limit=2, progress=True)
    run_loop(config, tmp_path / "run", phases=phases, log=lambda message: None, plot=False)
    assert phases.inner == [("loop policy 0 eval", 1, False)] + [
        (f"loop round {k} {phase}", 1, False) for k in range(2) for phase in ("search", "extract", "train", "eval")]
    drawn = tty.getvalue().replace("\n", "\r").split("\r")
    assert [line for line in drawn if line.startswith("loop")][-1].startswith("loop: 100%")
    assert "9/9" in [line for line in drawn if line.startswith("loop")][-1]
    assert progress_module.bars_open() == 0

    # a rerun skips every phase; the bar still counts them; with progress off nothing is drawn
    quiet = TTY()
    monkeypatch.setattr("sys.stderr", quiet)
    run_loop(LoopConfig(rounds=2, model="m0", problems_per_round=1, eval_limit=2, progress=False),
             tmp_path / "run", phases=BarPhases(quiet), log=lambda message: None, plot=False)
    assert quiet.getvalue() == ""


def test_loop_log_lines_print_plainly_without_bars_and_above_them_with(monkeypatch):
    from mcts_po.loop import stderr_log

    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    stderr_log("round 0 search: started")
    assert re.fullmatch(r"\[loop \d\d:\d\d:\d\d\] round 0 search: started\n", plain.getvalue())
    tty = TTY()
    monkeypatch.setattr("sys.stderr", tty)
    bar = progress_bar(True, total=1, desc="loop", stream=tty)
    stderr_log("between")
    bar.close()
    assert "] between\n" in tty.getvalue()


# ------------------------------------------------------------------ real model (slow)


class ClockedBackend:
    """A real backend whose every generate call moves the fake clock by 1 s (everything else is
    the real backend's, its counters included)."""

    def __init__(self, backend, clock: FakeClock):
        self.backend, self.clock = backend, clock

    def generate(self, requests):
        self.clock.now += 1.0
        return self.backend.generate(requests)

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest.mark.slow
def test_real_smollm2_bars_count_every_token_the_engine_reports(tmp_path, clock, bars):
    """On SmolLM2-135M (transformers backend), the search and evaluation bars' tokens per second
    are the engine's own counters (`Backend.stats()`: generated tokens over calls on the fake
    clock), and the search's done/solved and the evaluation's accuracy are the summaries'.

        flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q tests/test_progress.py -m slow
    """
    from mcts_po.backends import make_backend
    from mcts_po.evaluation import EvalConfig, evaluate_model
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    real = make_backend("transformers", model="smollm2-135m", seed=0)
    try:
        backend = ClockedBackend(real, clock)
        job = SearchJob(out=str(tmp_path / "search"), task="arithmetic", task_options={"num_ops": 1, "max_value": 20},
                        limit=3, model="smollm2-135m", backend="transformers",
                        search=SearchConfig(num_simulations=4, num_children=2, leaves_per_wave=2, max_depth=3),
                        sampling=SamplingConfig(max_step_tokens=32, rollout_max_tokens=48),
                        problems_in_flight=2, greedy_baseline=True, greedy_max_tokens=48)
        before = real.stats()
        summary = run_search_job(job, backend=backend)
        engine = real.stats().since(before)
        [search_bar] = bars
        assert search_bar.total == search_bar.n == 3 * 4
        last = search_bar.postfixes[-1]
        assert last["done"] == "3/3" and last["solved"] == summary["problems_with_correct_terminal"]
        assert engine.generated_tokens > 0
        assert tokens_per_second(last) == pytest.approx(engine.generated_tokens / engine.calls, abs=0.5)

        config = EvalConfig(model="smollm2-135m", task="arithmetic", task_options={"num_ops": 1, "max_value": 20},
                            split="test", limit=4, backend="transformers", max_tokens=48, chunk_size=2)
        before = real.stats()
        result = evaluate_model(config, tmp_path / "eval", backend=backend)
        engine = real.stats().since(before)
        eval_bar = bars[-1]
        assert eval_bar.postfixes[-1]["greedy"] == f"{result['greedy']['accuracy']:.3f}"
        assert result["generated_tokens"] == engine.generated_tokens
        assert tokens_per_second(eval_bar.postfixes[-1]) == pytest.approx(engine.generated_tokens / engine.calls, abs=0.5)
    finally:
        real.close()
