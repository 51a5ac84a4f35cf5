"""Ray-sharded search: the chunks of one search job spread over N Ray actors, one engine each.

Used by `run_search_job` (mcts_po/search_runner.py) when the job has `ray_address`:

    mcts-po search --task gsm8k --data ../shared/data/gsm8k --limit 200 --backend vllm \\
        --ray-address local --workers 4 --num-gpus-per-worker 1 --out runs/x
    ray start --head && mcts-po search ... --ray-address auto --workers 8 --num-gpus-per-worker 1

Needs the optional extra: `pip install -e .[ray]`.

How the guarantees of a one-process run are kept:
- the driver (this process) owns the run folder and is its only writer: it checks the run's
  identity, finds the finished trees, cuts the problems into the same chunks as one process
  (`problem_chunks` over the full list) and hands the unfinished chunks out one at a time to
  whichever worker is free; a worker returns the chunk's greedy and tree lines and the driver
  appends them (one fsynced write each) as they arrive, leaving out any problem already there;
- a worker searches a chunk exactly as one process does (`search_chunk`: greedy baseline,
  reseed from (seed, the chunk's problem ids), `run_search`), so with a reseedable backend
  (transformers) a chunk's trees do not depend on which worker ran it or what ran before;
- a worker that dies (killed, out of memory) is restarted by Ray (`ray_max_restarts`) and the
  chunk it held is searched again on it (`max_task_retries`); nothing of that chunk was written,
  so no tree is lost or written twice. A worker that cannot be restarted any more hands its
  chunk to another live worker; when none is left the run stops and rerunning the same command
  resumes (as it does after the driver itself is killed).

Test hook: the environment variable MCTS_PO_RAY_TEST_EXIT="K:MARKER" makes the first worker to
finish searching its K-th chunk exit abruptly (os._exit) before returning it, once per MARKER
file (created atomically by the worker that exits). tests/test_ray_search.py uses it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from mcts_po.io_utils import UserError, atomic_write_json

logger = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # results are a few JSON lines per chunk; keep Ray's memory modest
TEST_EXIT_ENV = "MCTS_PO_RAY_TEST_EXIT"


class SearchWorker:
    """One Ray actor: its own task object, backend (engine) and value guide, built from the job.

    `run_chunk` searches one chunk and returns its lines unwritten; `greedy` decodes greedy
    baselines only. Wrapped by `ray.remote` in `run_chunks_on_ray` (no Ray import here)."""

    def __init__(self, job: Any) -> None:
        from mcts_po.backends import make_backend
        from mcts_po.search_runner import make_value_guide
        from mcts_po.tasks import get_task

        self.job = job
        self.task = get_task(job.task, **job.task_options)
        threads = max(1, int(job.num_cpus_per_worker))
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # an http backend needs no torch
            pass
        self.backend = make_backend(job.backend, model=job.model, seed=job.search.seed, **job.backend_options)
        self.guide = make_value_guide(job, checked=True) if job.value_model else None
        self.chunks_searched = 0
        try:  # whether Ray restarted this actor after its process died
            import ray

            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:
            self.restarted = False

    def pid(self) -> int:
        return os.getpid()

    def run_chunk(self, chunk: list, greedy_ids: set[str], skip_ids: set[str]) -> dict[str, Any]:
        from mcts_po.search_runner import search_chunk

        result = search_chunk(self.backend, self.task, chunk, self.job, greedy_ids=greedy_ids, skip_ids=skip_ids,
                              guide=self.guide)
        self.chunks_searched += 1
        _maybe_exit_for_test(self.chunks_searched)
        return {"greedy": result.greedy, "trees": result.trees, "stats": result.stats, "pid": os.getpid(),
                "restarted": self.restarted}

    def greedy(self, problems: list) -> list[tuple[str, str]]:
        from mcts_po.search_runner import greedy_lines

        return greedy_lines(self.backend, self.task, problems, self.job, with_ids=True)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def _maybe_exit_for_test(chunks_searched: int) -> None:
    """The test hook of the module docstring: die like a killed worker, once per marker file."""
    spec = os.environ.get(TEST_EXIT_ENV)
    if not spec:
        return
    count, _, marker = spec.partition(":")
    if chunks_searched != int(count) or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(1)


def _last_lines(text: str, keep: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-keep:] if line.strip())


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray-address needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
    return ray


def connect(job: Any) -> bool:
    """Connect this process to the job's Ray cluster; returns whether it started Ray (and so must
    shut it down). A process where Ray is already initialized (a Python caller, a test) keeps
    its cluster whatever `ray_address` says."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    address = job.ray_address.strip()
    if address == "local":
        ray.init(num_cpus=max(1, math.ceil(job.workers * job.num_cpus_per_worker)),
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    else:
        try:
            ray.init(address=address)
        except ConnectionError as exc:
            raise UserError(f"--ray-address {address!r}: cannot connect to a Ray cluster ({exc}); start one with "
                            "`ray start --head`, or use --ray-address local") from None
    return True


def check_resources(job: Any, local: bool) -> None:
    """Refuse (`local`: a one-machine cluster) or warn (elsewhere: it may autoscale) when the
    cluster has fewer CPUs/GPUs than the workers ask for: Ray would leave them pending forever."""
    import ray

    total = ray.cluster_resources()
    wanted = {"CPU": job.workers * job.num_cpus_per_worker, "GPU": job.workers * job.num_gpus_per_worker}
    for name, amount in wanted.items():
        have = float(total.get(name, 0.0))
        if amount > have + 1e-9:
            message = (f"{job.workers} workers x {amount / job.workers:g} {name} need {amount:g} {name}, "
                       f"the Ray cluster has {have:g}")
            if local:
                raise UserError(message + "; lower --workers or --num-gpus-per-worker/--num-cpus-per-worker")
            logger.warning("%s; the workers wait until the cluster has them", message)


def worker_runtime_env() -> dict[str, Any]:
    """Environment of the workers: this checkout's mcts_po first on their path (a cluster node
    without it falls back to its installed mcts_po), and the test hook when set."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    if os.environ.get(TEST_EXIT_ENV):
        env[TEST_EXIT_ENV] = os.environ[TEST_EXIT_ENV]
    return {"env_vars": env}


def run_chunks_on_ray(job: Any, problems: list, done: set[str], greedy_done: set[str], stats: dict[str, Any],
                      bar: Any = None) -> None:
    """Search the unfinished chunks of `problems` on `job.workers` Ray actors, appending each
    chunk's lines to the run folder as it arrives (see the module docstring). Updates `done`,
    `greedy_done` and `stats` (with `stats["ray"]`: workers, chunks each worker returned, restarted worker processes
    that returned a chunk, wall seconds)."""
    from mcts_po.search_runner import SUMMARY_FILE, ChunkResult, problem_chunks, summarize_run, write_chunk_result

    out = Path(job.out)
    todo = deque((index, chunk) for index, chunk in enumerate(problem_chunks(problems, job.problems_in_flight))
                 if not all(p.id in done for p in chunk))
    greedy_left = [p for p in problems if job.greedy_baseline and p.id not in greedy_done]
    if not todo and not greedy_left:
        return
    ray = _import_ray()
    started_ray = connect(job)
    actors: list[Any] = []
    started = time.perf_counter()
    restarted_pids: set[int] = set()
    chunks_run: dict[int, int] = {}
    try:
        check_resources(job, local=job.ray_address.strip() == "local")
        restarts = job.ray_max_restarts
        worker_class = ray.remote(SearchWorker)
        for _ in range(min(job.workers, max(1, len(todo)))):
            actors.append(worker_class.options(
                num_cpus=job.num_cpus_per_worker, num_gpus=job.num_gpus_per_worker, max_restarts=restarts,
                max_task_retries=restarts, runtime_env=worker_runtime_env(),
            ).remote(job))
        logger.info("Ray search: %d chunks over %d workers (%s)", len(todo), len(actors), job.ray_address)
        alive = set(range(len(actors)))
        idle = deque(range(len(actors)))
        in_flight: dict[Any, tuple[int, int, list]] = {}
        handoffs: dict[int, int] = {}
        failure: BaseException | None = None
        while (todo and failure is None) or in_flight:
            while todo and idle and failure is None:
                worker = idle.popleft()
                index, chunk = todo.popleft()
                greedy_ids = {p.id for p in chunk if p.id not in greedy_done} if job.greedy_baseline else set()
                ref = actors[worker].run_chunk.remote(chunk, greedy_ids, {p.id for p in chunk if p.id in done})
                in_flight[ref] = (worker, index, chunk)
            if not in_flight:
                break
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            worker, index, chunk = in_flight.pop(ref)
            try:
                reply = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                alive.discard(worker)
                handoffs[index] = handoffs.get(index, 0) + 1
                logger.warning("Ray worker %d died for good on chunk %d (%s)", worker, index, type(exc).__name__)
                if alive and handoffs[index] <= len(actors):
                    todo.appendleft((index, chunk))
                elif failure is None:
                    failure = UserError(f"every Ray worker died (last on chunk {index}: {_last_lines(str(exc))}); the "
                                        f"trees finished so far are in {out}; rerun the same command to resume")
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                failure = failure or (cause if isinstance(cause, Exception) else exc)
                continue
            if reply["restarted"]:
                restarted_pids.add(int(reply["pid"]))
            chunks_run[worker] = chunks_run.get(worker, 0) + 1
            result = ChunkResult(greedy=[tuple(x) for x in reply["greedy"]], trees=[tuple(x) for x in reply["trees"]],
                                 stats=reply["stats"])
            written = write_chunk_result(out, result, done, greedy_done, stats)
            if bar is not None:
                bar.update(written * job.search.num_simulations)
            atomic_write_json(out / SUMMARY_FILE, summarize_run(out, job, stats))
            idle.append(worker)
        if failure is not None:
            raise failure
        missing = [p for p in problems if job.greedy_baseline and p.id not in greedy_done and p.id in done]
        if missing:
            lines = ray.get(actors[min(alive)].greedy.remote(missing))
            write_chunk_result(out, ChunkResult(greedy=[tuple(x) for x in lines], trees=[], stats={}), done,
                               greedy_done, stats)
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        if started_ray:
            ray.shutdown()
        stats["ray"] = {"address": job.ray_address, "workers": len(actors),
                        "chunks_per_worker": [chunks_run.get(i, 0) for i in range(len(actors))],
                        "worker_restarts_seen": len(restarted_pids),
                        "wall_seconds": round(time.perf_counter() - started, 3)}
