"""Ray-sharded search (`mcts-po search --ray-address ... --workers N`, mcts_po/ray_search.py) on a
local Ray cluster with two CPU workers: the same trees as one process, every problem exactly once,
also when a worker dies midway or the run folder was left half-written.

The transformers backend on the tiny random Llama of tests/test_crash_resume.py is deterministic
given the per-chunk reseed, and a Ray worker runs with one torch thread like the single-process
reference (a subprocess with OMP_NUM_THREADS=1), so the trees must match line for line, whichever
worker searched which chunk. The slow test does the same with SmolLM2-135M.

    .venv/bin/pytest -q tests/test_ray_search.py -m "not slow"
    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q tests/test_ray_search.py -m slow
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from test_crash_resume import TINY_OPTIONS, build_tiny_llama, comparable_lines, run_to_end, search_command

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

TINY_LIMIT = 8
IN_FLIGHT = 2  # 4 chunks of 2 problems: each of the 2 workers gets some
OPTIONS = (*TINY_OPTIONS, "--greedy-max-tokens", "6")
RAY_MEMORY = {"object_store_memory": 200 * 1024**2}


def by_problem(records: list[dict]) -> dict[str, dict]:
    ids = [r["problem_id"] for r in records]
    assert len(ids) == len(set(ids)), "a problem written twice"
    return {r["problem_id"]: r for r in records}


def greedy_records(out: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in (out / "greedy.jsonl").read_text(encoding="utf-8").splitlines()]
    return by_problem(records)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> Path:
    """An uninterrupted single-process run (a subprocess with one thread, as Ray's workers have)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_to_end(search_command(tiny_model, out, limit=TINY_LIMIT, in_flight=IN_FLIGHT, extra=OPTIONS), timeout=300)
    assert len(comparable_lines(out / "trees.jsonl")) == TINY_LIMIT
    return out


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster of two CPUs in this process, shared by the in-process tests."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, **RAY_MEMORY)
    yield ray
    ray.shutdown()


def tiny_ray_job(model: str, out: Path, workers: int = 2, **changes):
    """The in-process twin of `search_command(..., extra=OPTIONS)` sharded over Ray workers."""
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob

    options = dict(out=str(out), task="demo", limit=TINY_LIMIT, model=model, backend="transformers",
                   search=SearchConfig(num_simulations=4, num_children=2, leaves_per_wave=2, max_depth=3, seed=7),
                   sampling=SamplingConfig(max_step_tokens=6, rollout_max_tokens=6, self_eval_top_logprobs=5),
                   problems_in_flight=IN_FLIGHT, greedy_baseline=True, greedy_max_tokens=6, progress=False,
                   ray_address="local", workers=workers)
    options.update(changes)
    return SearchJob(**options)


def assert_same_run(out: Path, reference: Path) -> None:
    expected = by_problem(comparable_lines(reference / "trees.jsonl"))
    got = by_problem(comparable_lines(out / "trees.jsonl"))
    assert sorted(got) == sorted(expected)  # every problem, exactly once
    for problem_id in expected:
        assert got[problem_id] == expected[problem_id], problem_id
    assert greedy_records(out) == greedy_records(reference)
    assert json.loads((out / "summary.json").read_text())["problems"] == len(expected)


# ------------------------------------------------------------------------- the command line

def test_cli_two_ray_workers_write_the_single_process_trees(tiny_model, reference, tmp_path):
    """`mcts-po search ... --ray-address local --workers 2` starts its own two-CPU cluster."""
    out = tmp_path / "run"
    command = search_command(tiny_model, out, limit=TINY_LIMIT, in_flight=IN_FLIGHT,
                             extra=(*OPTIONS, "--ray-address", "local", "--workers", "2"))
    run_to_end(command, timeout=400)
    assert_same_run(out, reference)
    ray_stats = json.loads((out / "summary.json").read_text())["this_invocation"]["ray"]
    assert ray_stats["workers"] == 2 and ray_stats["worker_restarts_seen"] == 0
    assert min(ray_stats["chunks_per_worker"]) >= 1  # both workers searched
    assert sum(ray_stats["chunks_per_worker"]) == TINY_LIMIT // IN_FLIGHT
    # The run's identity does not include how it was sharded: one process resumes it (nothing left).
    rerun = run_to_end(search_command(tiny_model, out, limit=TINY_LIMIT, in_flight=IN_FLIGHT, extra=OPTIONS),
                       timeout=300)
    assert f"{TINY_LIMIT} of {TINY_LIMIT} problems already searched" in rerun.stderr


# ------------------------------------------------------------------------- in this process

def test_a_worker_dying_midway_loses_and_duplicates_nothing(local_ray, tiny_model, reference, tmp_path, monkeypatch):
    """The first worker to finish its first chunk exits abruptly before returning it; Ray restarts
    it, the chunk is searched again there, and the run ends with the single-process trees."""
    from mcts_po.ray_search import TEST_EXIT_ENV
    from mcts_po.search_runner import run_search_job

    marker = tmp_path / "died"
    monkeypatch.setenv(TEST_EXIT_ENV, f"1:{marker}")
    summary = run_search_job(tiny_ray_job(tiny_model, tmp_path / "run"))
    assert marker.exists(), "no worker exited: the test hook did not fire"
    assert_same_run(tmp_path / "run", reference)
    ray_stats = summary["this_invocation"]["ray"]
    assert ray_stats["worker_restarts_seen"] == 1
    assert summary["this_invocation"]["problems_searched_now"] == TINY_LIMIT


def test_ray_run_resumes_a_half_written_run_folder(local_ray, tiny_model, reference, tmp_path):
    """A single-process run killed in its third chunk (one tree whole, the next torn, greedy lines
    lost): the Ray rerun searches only what is missing and ends with the uninterrupted trees."""
    from mcts_po.search_runner import run_search_job

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    lines = (out / "trees.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "trees.jsonl").write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2], encoding="utf-8")
    greedy = (out / "greedy.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "greedy.jsonl").write_text("".join(greedy[:4]), encoding="utf-8")
    summary = run_search_job(tiny_ray_job(tiny_model, out))
    assert summary["this_invocation"]["problems_searched_now"] == 3
    assert_same_run(out, reference)


def test_local_cluster_without_the_gpus_asked_for_is_refused(local_ray, tiny_model, tmp_path):
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import run_search_job

    with pytest.raises(UserError, match=r"2 workers x 1 GPU need 2 GPU, the Ray cluster has 0"):
        run_search_job(tiny_ray_job(tiny_model, tmp_path / "run", num_gpus_per_worker=1.0))
    assert not (tmp_path / "run" / "trees.jsonl").exists()


def test_an_error_in_the_workers_is_raised_as_itself(local_ray, tmp_path):
    """A model that cannot be loaded fails every worker's start: the run says why, and writes no tree."""
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import run_search_job

    with pytest.raises(UserError, match="every Ray worker died") as failed:
        run_search_job(tiny_ray_job(str(tmp_path / "no-such-model"), tmp_path / "run"))
    assert "no-such-model" in str(failed.value)
    assert not (tmp_path / "run" / "trees.jsonl").exists()


# ------------------------------------------------------------------------- refusals, no Ray needed

def test_workers_without_ray_address_or_with_a_backend_are_refused(tmp_path):
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import SearchJob, run_search_job

    with pytest.raises(UserError, match="workers=2 needs --ray-address"):
        run_search_job(SearchJob(out=str(tmp_path / "a"), task="demo", workers=2))
    with pytest.raises(UserError, match="workers must be >= 1"):
        run_search_job(SearchJob(out=str(tmp_path / "b"), task="demo", workers=0, ray_address="local"))
    with pytest.raises(UserError, match="pass no backend"):
        run_search_job(SearchJob(out=str(tmp_path / "c"), task="demo", ray_address="local"), backend=object())


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import SearchJob, run_search_job

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        run_search_job(SearchJob(out=str(tmp_path / "run"), task="demo", limit=2, ray_address="local", workers=2))


# ------------------------------------------------------------------------- slow: SmolLM2

@pytest.mark.slow
def test_smollm2_two_ray_workers_write_the_single_process_trees(tmp_path):
    """SmolLM2-135M, transformers backend, 2 demo problems, one chunk each, 2 workers."""
    from mcts_po.models import resolve_model

    try:
        folder = resolve_model("smollm2-135m")
    except Exception as exc:  # the weights package is missing
        pytest.skip(f"SmolLM2 not available: {exc}")
    options = ("--num-simulations", "2", "--num-children", "2", "--leaves-per-wave", "2",
               "--max-step-tokens", "16", "--rollout-max-tokens", "16", "--max-depth", "3",
               "--greedy-max-tokens", "16")
    run_to_end(search_command(folder, tmp_path / "reference", limit=2, in_flight=1, extra=options), timeout=400)
    expected = by_problem(comparable_lines(tmp_path / "reference" / "trees.jsonl"))
    assert len(expected) == 2 and all(len(r["nodes"]) > 1 for r in expected.values())
    command = search_command(folder, tmp_path / "run", limit=2, in_flight=1,
                             extra=(*options, "--ray-address", "local", "--workers", "2"))
    run_to_end(command, timeout=500)
    got = by_problem(comparable_lines(tmp_path / "run" / "trees.jsonl"))
    assert got == expected
    assert greedy_records(tmp_path / "run") == greedy_records(tmp_path / "reference")
    ray_stats = json.loads((tmp_path / "run" / "summary.json").read_text())["this_invocation"]["ray"]
    assert ray_stats["chunks_per_worker"] == [1, 1]
