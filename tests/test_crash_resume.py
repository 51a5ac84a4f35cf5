"""Crash and resume: a `mcts-po search` killed with SIGKILL midway and rerun ends with exactly the
trees of an uninterrupted run under the same seed (no duplicate, missing or truncated line).

The transformers backend is deterministic given its seed and the sequence of calls, and the
search runner reseeds it before each chunk of problems from (seed, the chunk's problem ids), so
a chunk's trees do not depend on what ran before it. Fast tests use a tiny random Llama built
offline; the slow test does the same with SmolLM2-135M.

    .venv/bin/pytest -q tests/test_crash_resume.py -m "not slow"
    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q tests/test_crash_resume.py -m slow
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcts_po.search.tree import Tree
from tiny_model import BRACKET_CHAT_TEMPLATE, byte_level_tokenizer, save_tiny_llama

REPO = Path(__file__).resolve().parents[1]
VOLATILE_TREE_FIELDS = ("timings",)  # wall-clock measurements differ between runs


def build_tiny_llama(folder: Path) -> str:
    """A 2-layer random Llama with a byte-level tokenizer (no download), saved to `folder`."""
    return save_tiny_llama(folder, byte_level_tokenizer(BRACKET_CHAT_TEMPLATE), hidden_size=32, intermediate_size=64,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, seed=1234)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def search_command(model: str, out: Path, *, limit: int, in_flight: int, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable, "-m", "mcts_po.cli", "search", "--task", "demo", "--limit", str(limit),
        "--model", model, "--backend", "transformers", "--out", str(out),
        "--problems-in-flight", str(in_flight), "--no-progress", "--seed", "7", *extra,
    ]


TINY_OPTIONS = ("--num-simulations", "4", "--num-children", "2", "--leaves-per-wave", "2",
                "--max-step-tokens", "6", "--rollout-max-tokens", "6", "--max-depth", "3",
                "--self-eval-top-logprobs", "5")


def comparable_lines(path: Path) -> list[dict]:
    """Each line of a trees.jsonl as a dict without the volatile fields; fails on a torn line."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} ends in a torn line"
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        Tree.from_dict(record)  # a whole, valid tree
        for name in VOLATILE_TREE_FIELDS:
            record.pop(name, None)
        records.append(record)
    return records


def run_to_end(command: list[str], timeout: float, threads: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env(threads))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The same thread count in every run keeps float sums identical; the tiny model gains
    # nothing from threads and the machine is shared.
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_after_first_trees(command: list[str], trees_path: Path, total: int, timeout: float, threads: int = 1) -> int:
    """Start the search, SIGKILL it as soon as some but not all trees are written; return how many
    complete lines were on disk at the kill."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=_env(threads))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace")
                pytest.fail(f"search finished (rc {process.returncode}) before it could be killed midway: {stderr[-2000:]}")
            if trees_path.exists():
                lines = trees_path.read_text(encoding="utf-8").count("\n")
                if 0 < lines < total:
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=30)
                    return trees_path.read_text(encoding="utf-8").count("\n")
            time.sleep(0.02)
        pytest.fail("the search wrote no tree before the timeout")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def assert_resumed_run_matches(command: list[str], out: Path, expected: list[dict], timeout: float,
                               threads: int = 1) -> None:
    """Kill the search midway, rerun it, and compare every line with `expected`."""
    total = len(expected)
    lines_at_kill = kill_after_first_trees(command, out / "trees.jsonl", total, timeout, threads)
    assert 0 < lines_at_kill < total
    result = run_to_end(command, timeout, threads)
    assert f"{lines_at_kill} of {total} problems already searched" in result.stderr

    resumed = comparable_lines(out / "trees.jsonl")
    ids = [r["problem_id"] for r in resumed]
    assert len(ids) == len(set(ids)) == total  # no duplicate, no missing tree
    assert resumed == expected  # the same trees, in the same order
    assert json.loads((out / "summary.json").read_text())["problems"] == total


# --------------------------------------------------------------------------- tiny model

TINY_LIMIT = 8


def tiny_job(model: str, out: Path, limit: int = TINY_LIMIT):
    """The in-process twin of `search_command(..., extra=TINY_OPTIONS)`."""
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob

    return SearchJob(out=str(out), task="demo", limit=limit, model=model, backend="transformers",
                     search=SearchConfig(num_simulations=4, num_children=2, leaves_per_wave=2, max_depth=3, seed=7),
                     sampling=SamplingConfig(max_step_tokens=6, rollout_max_tokens=6, self_eval_top_logprobs=5),
                     problems_in_flight=2, greedy_baseline=True, greedy_max_tokens=6, progress=False)


@pytest.fixture(scope="module")
def tiny_backend(tiny_model):
    import torch

    from mcts_po.backends import make_backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1)
    backend = make_backend("transformers", model=tiny_model, seed=7)
    yield backend
    backend.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_reference(tiny_model, tiny_backend, tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny job (in this process)."""
    from mcts_po.search_runner import run_search_job

    out = tmp_path_factory.mktemp("reference")
    run_search_job(tiny_job(tiny_model, out), backend=tiny_backend)
    return out


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_trees(tiny_model, tmp_path):
    # The reference is an uninterrupted run in a fresh process too: an in-process vLLM engine
    # earlier in the suite pins this process's threads (torch.set_num_threads becomes a no-op),
    # which changes float sums, so the in-process `tiny_reference` is no reference for subprocesses.
    run_to_end(search_command(tiny_model, tmp_path / "reference", limit=TINY_LIMIT, in_flight=2, extra=TINY_OPTIONS),
               timeout=180)
    expected = comparable_lines(tmp_path / "reference" / "trees.jsonl")
    assert len(expected) == TINY_LIMIT
    command = search_command(tiny_model, tmp_path / "run", limit=TINY_LIMIT, in_flight=2, extra=TINY_OPTIONS)
    assert_resumed_run_matches(command, tmp_path / "run", expected, timeout=180)


def test_torn_line_and_half_written_chunk_are_redone_exactly(tiny_model, tiny_backend, tiny_reference, tmp_path):
    from mcts_po.search_runner import run_search_job

    expected = comparable_lines(tiny_reference / "trees.jsonl")
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_reference, damaged)
    # A kill during the third chunk's write: its first line whole, its second torn; greedy lines lost too.
    lines = (damaged / "trees.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (damaged / "trees.jsonl").write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2], encoding="utf-8")
    greedy = (damaged / "greedy.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (damaged / "greedy.jsonl").write_text("".join(greedy[:4]), encoding="utf-8")
    # The backend has been used since the reference run: only the per-chunk reseed makes the redo exact.
    summary = run_search_job(tiny_job(tiny_model, damaged), backend=tiny_backend)
    assert comparable_lines(damaged / "trees.jsonl") == expected
    assert summary["this_invocation"]["problems_searched_now"] == 3
    greedy_ids = [json.loads(line)["problem_id"] for line in (damaged / "greedy.jsonl").read_text().splitlines()]
    assert sorted(greedy_ids) == sorted(r["problem_id"] for r in expected)
    assert len(greedy_ids) == len(set(greedy_ids))


def test_rerun_of_a_finished_run_changes_nothing(tiny_model, tiny_backend, tiny_reference, tmp_path):
    from mcts_po.search_runner import run_search_job

    out = tmp_path / "run"
    shutil.copytree(tiny_reference, out)
    before = (out / "trees.jsonl").read_bytes()
    summary = run_search_job(tiny_job(tiny_model, out), backend=tiny_backend)
    assert (out / "trees.jsonl").read_bytes() == before
    assert summary["this_invocation"]["problems_searched_now"] == 0
    assert summary["problems"] == TINY_LIMIT


def test_rerun_with_other_settings_is_refused(tiny_model, tiny_backend, tiny_reference, tmp_path):
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import run_search_job

    out = tmp_path / "run"
    shutil.copytree(tiny_reference, out)
    job = tiny_job(tiny_model, out)
    previous = job.search.num_simulations
    job.search.num_simulations = 5
    with pytest.raises(UserError, match="holds a run made with other settings") as refused:
        run_search_job(job, backend=tiny_backend)
    assert f"changed: search.num_simulations {previous!r} -> 5" in str(refused.value)


@pytest.mark.parametrize("recorded", [None, "followup"])
def test_run_searched_with_a_removed_self_eval_layout_is_refused_naming_the_file(tiny_model, tiny_backend,
                                                                                 tiny_reference, tmp_path, recorded):
    """A run_config.json without sampling.self_eval_layout was searched with the 'separate' layout, one
    with 'followup' with that one: both layouts were removed, and resuming says so, naming the file
    and the doc with the measurement, before anything is searched."""
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import RUN_CONFIG_FILE, run_search_job

    out = tmp_path / "run"
    shutil.copytree(tiny_reference, out)
    config_path = out / RUN_CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    del config["identity"]["sampling"]["self_eval_layout"]
    if recorded is not None:
        config["identity"]["sampling"]["self_eval_layout"] = recorded
    config_path.write_text(json.dumps(config), encoding="utf-8")
    before = (out / "trees.jsonl").read_bytes()

    with pytest.raises(UserError) as refused:
        run_search_job(tiny_job(tiny_model, out), backend=tiny_backend)
    message = str(refused.value)
    assert message.startswith(f"{config_path}: this run was searched with the self-evaluation layout "
                              f"{recorded or 'separate'!r}")
    assert "which was removed" in message and "docs/prompts.md" in message
    assert (out / "trees.jsonl").read_bytes() == before


def test_chunk_seed_depends_only_on_seed_and_problem_ids():
    from mcts_po.search_runner import chunk_seed, problem_chunks

    assert chunk_seed(7, ["a", "b"]) == chunk_seed(7, ["a", "b"])
    assert len({chunk_seed(7, ["a", "b"]), chunk_seed(8, ["a", "b"]), chunk_seed(7, ["b", "a"]),
                chunk_seed(7, ["a"])}) == 4
    assert 0 <= chunk_seed(2**40, ["x"]) < 2**63
    assert problem_chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]


# --------------------------------------------------------------------------- slow: SmolLM2

@pytest.mark.slow
def test_sigkill_midway_with_smollm2_resumes_to_the_same_trees(tmp_path):
    from mcts_po.models import resolve_model

    try:
        folder = resolve_model("smollm2-135m")
    except Exception as exc:  # the weights package is missing
        pytest.skip(f"SmolLM2 not available: {exc}")
    options = ("--num-simulations", "2", "--num-children", "2", "--leaves-per-wave", "2",
               "--max-step-tokens", "16", "--no-use-rollout", "--max-depth", "4", "--no-greedy-baseline")
    reference = search_command(folder, tmp_path / "reference", limit=3, in_flight=1, extra=options)
    run_to_end(reference, timeout=200, threads=2)
    expected = comparable_lines(tmp_path / "reference" / "trees.jsonl")
    assert len(expected) == 3 and all(len(r["nodes"]) > 1 for r in expected)
    command = search_command(folder, tmp_path / "run", limit=3, in_flight=1, extra=options)
    assert_resumed_run_matches(command, tmp_path / "run", expected, timeout=200, threads=2)


# --------------------------------------------------------------------------- mcts-po loop

LOOP_CONFIG = """\
rounds: 1
method: step-dpo
model: {model}
task: arithmetic
task_options: {{num_ops: 1, max_value: 5}}
problems_per_round: 8
eval_limit: 4
eval_max_tokens: 6
backend: transformers
problems_in_flight: 2
seed: 3
progress: false
search: {{num_simulations: 4, num_children: 3, leaves_per_wave: 2, max_depth: 3}}
sampling: {{max_step_tokens: 6, rollout_max_tokens: 6, self_eval_top_logprobs: 5}}
extract: {{min_q_margin: 0.0}}
train: {{max_steps: 60, batch_size: 2, max_length: 256}}
"""


def loop_outputs(run: Path) -> dict[str, object]:
    """What a finished loop run produced, minus wall-clock fields: trees, rows, eval results,
    the trained weights and the accuracies."""
    from safetensors.numpy import load_file

    round_dir = run / "round_0"
    weights = load_file(str(round_dir / "policy" / "model.safetensors"))
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "trees": comparable_lines(round_dir / "search" / "trees.jsonl"),
        "rows": (round_dir / "data" / "step-dpo.jsonl").read_text(),
        "baseline_eval": (run / "baseline_eval" / "results.jsonl").read_text(),
        "eval": (round_dir / "eval" / "results.jsonl").read_text(),
        "weights": {name: value.tobytes() for name, value in sorted(weights.items())},
        "accuracy_by_policy": metrics["accuracy_by_policy"],
        "rows_by_round": [r["rows"] for r in metrics["rounds"]],
        "optimizer_steps": [r["train"]["optimizer_steps"] for r in metrics["rounds"]],
    }


def kill_when(command: list[str], ready, timeout: float, settle: float = 0.0) -> None:
    """Run `command` and SIGKILL it once `ready()` is true (after `settle` more seconds)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace")
                pytest.fail(f"loop finished (rc {process.returncode}) before the kill point: {stderr[-2000:]}")
            if ready():
                time.sleep(settle)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return
            time.sleep(0.02)
        pytest.fail("the kill point was not reached before the timeout")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.mark.slow
def test_loop_killed_within_and_between_phases_resumes_to_the_uninterrupted_results(tiny_model, tmp_path):
    """One run killed three times (inside the search, right after the search's marker, inside
    training), rerun after each kill, ends with the outputs of an uninterrupted run."""
    config = tmp_path / "loop.yaml"
    config.write_text(LOOP_CONFIG.format(model=tiny_model), encoding="utf-8")

    def loop_command(run: Path) -> list[str]:
        return [sys.executable, "-m", "mcts_po.cli", "loop", "--config", str(config), "--out", str(run), "--no-plot"]

    reference = tmp_path / "reference"
    run_to_end(loop_command(reference), timeout=300)
    expected = loop_outputs(reference)
    assert expected["rows_by_round"][0] > 0  # training really ran, so the train kill is meaningful

    run = tmp_path / "run"
    round_dir = run / "round_0"
    trees = round_dir / "search" / "trees.jsonl"
    # 1. inside the search phase: some trees written, not all
    kill_when(loop_command(run), lambda: trees.exists() and 0 < trees.read_text().count("\n") < 8, timeout=300)
    assert not (round_dir / "search.done.json").exists()
    # 2. between phases: as soon as the search's done-marker is written
    kill_when(loop_command(run), lambda: (round_dir / "search.done.json").exists(), timeout=300)
    # 3. inside training: the rows are extracted, the policy not yet saved
    kill_when(loop_command(run), lambda: (round_dir / "extract.done.json").exists(), timeout=300, settle=1.0)
    assert not (round_dir / "train.done.json").exists()
    result = run_to_end(loop_command(run), timeout=300)
    assert re.search(r"round 0 search \(policy 0\): done before, skipped", result.stderr), result.stderr
    assert "round 0 extract (step-dpo): done before, skipped" in result.stderr

    resumed = loop_outputs(run)
    for key in expected:
        assert resumed[key] == expected[key], key
