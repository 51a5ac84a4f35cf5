"""math-verify in worker processes: a small pool of persistent, killable child interpreters.

`verify_in_worker(gold, pred, timeout)` runs math-verify's `parse` + `verify(gold, pred)`
(gold first) in a worker and returns its verdict, or False on timeout, crash or any error.
`mcts_po.verifiers.verify_math` calls it only after the pure checks of
`mcts_po.verifiers.answers` could not decide.

    from mcts_po.verifiers import math_verify_pool
    math_verify_pool.warm_up_math_workers(2)          # start two workers ahead of time
    math_verify_pool.verify_in_worker("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", 5.0)   # -> True
    math_verify_pool.shutdown_math_workers()          # also done at exit

Why a worker process for math-verify. math-verify's own timeouts use `signal.alarm`,
which only works in the main thread of the main interpreter (elsewhere it raises
`ValueError`), and its `TimeoutException` derives from `BaseException`. sympy can also
spend minutes (or all memory) on a hostile expression, and a thread cannot be killed.
So a comparison goes to a persistent worker (`python -c` running `_worker_main`, started
with `subprocess.Popen`, i.e. a fresh interpreter: no fork of a threaded parent, no
re-import of the caller's `__main__`, and it also works inside daemonic `multiprocessing`
workers, which may not use `multiprocessing` children). The worker calls
`parse(..., parsing_timeout=None)` and `verify(..., timeout_seconds=None)` (signals off)
and answers over a pipe. The parent waits at most `timeout` seconds for the answer
(measured from when the request is sent; waiting for a free worker or for a worker to
start is not counted, and both are bounded); on timeout it SIGKILLs the worker, returns
False, and a new worker is started lazily by the next call. `timeout=None` means
`DEFAULT_MATH_TIMEOUT_S` (5 s, read at call time): there is no unlimited mode. Workers
get a 4 GiB address-space limit, so a blow-up becomes a `MemoryError` (False), not a
swapping machine. POSIX only (the parent waits on the pipe with `select`).

Thread safety: a small pool. Each call checks out an idle worker (or starts one, up to
`max_workers`, default `max(4, os.cpu_count())`), so concurrent callers never queue
behind each other's slow inputs unless more than `max_workers` calls are in flight. Pool
size is set with `configure_math_workers(max_workers=...)`; `warm_up_math_workers(n)`
starts workers ahead of time (each takes ~1-2 s to import sympy). Workers are closed at
exit (`atexit`), and a process that forks drops the inherited pool (the parent's
workers stay the parent's).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

DEFAULT_MATH_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 120.0
WORKER_MEMORY_LIMIT_BYTES = 4 << 30

# ----------------------------------------------------------------------------------------
# The math-verify worker (child side)
# ----------------------------------------------------------------------------------------

_LATEX_DELIMITED = re.compile(r"\\boxed|\\fbox|(?<!\\)\$|\\\(|\\\[")


def _parse_for_math_verify(parse: Callable, text: str) -> list:
    """math-verify needs delimiters: try the text inside `\\boxed{}` (bare LaTeX such as
    MATH-500's `answer`) and the text as written, in the order its look suggests."""
    boxed = "\\boxed{" + text + "}"
    candidates = [text, boxed] if _LATEX_DELIMITED.search(text) else [boxed, text]
    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def _worker_compare(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = _parse_for_math_verify(parse, gold)
    pred_parsed = _parse_for_math_verify(parse, pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _worker_main(memory_limit_bytes: int | None = WORKER_MEMORY_LIMIT_BYTES) -> None:
    """Child process loop: one JSON request per stdin line, one JSON reply per line on the
    original stdout (fd 1 is pointed at stderr so stray prints cannot corrupt replies)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if memory_limit_bytes:
        try:
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                memory_limit_bytes = min(memory_limit_bytes, hard)
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, hard))
        except (ImportError, ValueError, OSError):
            pass
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    replies = os.fdopen(reply_fd, "w", encoding="utf-8", buffering=1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    try:
        import math_verify  # noqa: F401  (import now, so requests only pay for the work)
        from math_verify.errors import TimeoutException
    except BaseException as error:  # noqa: BLE001 - report and exit
        replies.write(json.dumps({"ready": False, "error": repr(error)}) + "\n")
        return
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            equal, error = _worker_compare(request["gold"], request["pred"]), None
        except (Exception, TimeoutException) as exc:  # noqa: BLE001
            equal, error = False, type(exc).__name__
        replies.write(json.dumps({"equal": equal, "error": error}) + "\n")


# ----------------------------------------------------------------------------------------
# The math-verify worker pool (parent side)
# ----------------------------------------------------------------------------------------

class _WorkerGone(Exception):
    """The worker timed out, died or answered nonsense; it must be discarded."""


class _MathVerifyWorker:
    """One child interpreter running `_worker_main`, talked to over pipes."""

    def __init__(self) -> None:
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONSAFEPATH"] = "1"  # 3.11+: no cwd on sys.path (a stray ./sympy.py)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        code = ("from mcts_po.verifiers.math_verify_pool import _worker_main; "
                f"_worker_main({WORKER_MEMORY_LIMIT_BYTES!r})")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, close_fds=True)
        self._buffer = b""

    def _read_reply(self, deadline: float) -> dict:
        stdout_fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerGone("timeout")
            ready, _, _ = select.select([stdout_fd], [], [], remaining)
            if not ready:
                raise _WorkerGone("timeout")
            chunk = os.read(stdout_fd, 65536)
            if not chunk:
                raise _WorkerGone(f"worker exited (code {self.process.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as error:
            raise _WorkerGone(f"bad reply {line[:80]!r}") from error

    def wait_ready(self, timeout: float) -> None:
        reply = self._read_reply(time.monotonic() + timeout)
        if not reply.get("ready"):
            raise _WorkerGone(f"worker failed to start: {reply.get('error')}")

    def compare(self, gold: str, pred: str, timeout: float) -> bool:
        request = json.dumps({"gold": gold, "pred": pred}) + "\n"
        try:
            self.process.stdin.write(request.encode("utf-8", "surrogatepass"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as error:
            raise _WorkerGone(f"cannot write to worker: {error}") from error
        reply = self._read_reply(time.monotonic() + timeout)
        return reply.get("equal") is True

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.close_pipes()

    def close(self) -> None:
        """Polite shutdown: EOF on stdin ends the loop; kill if it lingers."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=2)
        except Exception:  # noqa: BLE001
            self.kill()
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except Exception:  # noqa: BLE001
                pass


class MathVerifyPool:
    """Idle workers plus a count of live ones; callers check a worker out per request."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or max(4, os.cpu_count() or 1)
        self._condition = threading.Condition()
        self._idle: list[_MathVerifyWorker] = []
        self._all: set[_MathVerifyWorker] = set()
        self._starting = 0
        self._closed = False
        self.timeouts = 0  # requests cut by the timeout (workers killed)

    def _checkout(self) -> _MathVerifyWorker:
        with self._condition:
            while True:
                if self._closed:
                    raise _WorkerGone("pool closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._starting < self.max_workers:
                    self._starting += 1
                    break
                self._condition.wait()
        worker = None
        try:
            worker = _MathVerifyWorker()
            worker.wait_ready(WORKER_START_TIMEOUT_S)
        except BaseException:
            if worker is not None:
                worker.kill()
            with self._condition:
                self._starting -= 1
                self._condition.notify()
            raise
        with self._condition:
            self._starting -= 1
            self._all.add(worker)
        return worker

    def _checkin(self, worker: _MathVerifyWorker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._condition:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
            self._condition.notify()
        if healthy and self._closed:
            worker.close()

    def verify(self, gold: str, pred: str, timeout: float | None) -> bool:
        """math-verify `verify(gold, pred)` in a worker; False on timeout/crash/error."""
        try:
            worker = self._checkout()
        except (_WorkerGone, OSError) as error:
            logger.warning("math-verify worker unavailable: %s", error)
            return False
        healthy = False
        try:
            seconds = DEFAULT_MATH_TIMEOUT_S if timeout is None else max(float(timeout), 0.0)
            result = worker.compare(gold, pred, seconds)
            healthy = True
            return result
        except _WorkerGone as error:
            if str(error) == "timeout":
                self.timeouts += 1
            logger.debug("math-verify worker discarded: %s", error)
            return False
        finally:
            self._checkin(worker, healthy)

    def warm_up(self, count: int) -> int:
        """Start workers until `count` (capped at max_workers) are alive; returns how many."""
        started = []
        try:
            for _ in range(min(count, self.max_workers)):
                started.append(self._checkout())  # holding them forces new ones to start
        finally:
            for worker in started:
                self._checkin(worker, True)
        with self._condition:
            return len(self._all)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._all.difference_update(idle)
        for worker in idle:
            worker.close()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's workers without touching the processes."""
        for worker in list(self._all):
            worker.close_pipes()
        self._all.clear()
        self._idle.clear()


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()
_POOL_MAX_WORKERS: int | None = None


def _math_pool() -> MathVerifyPool:
    global _POOL
    pool = _POOL
    if pool is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = MathVerifyPool(_POOL_MAX_WORKERS)
            pool = _POOL
    return pool


def verify_in_worker(gold: str, pred: str, timeout: float | None = None) -> bool:
    """math-verify `verify(gold, pred)` (gold first) in a worker of the process-wide pool,
    limited to `timeout` seconds (None: `DEFAULT_MATH_TIMEOUT_S`). False on timeout, crash
    or any error; starts the pool's first worker when none is alive."""
    return _math_pool().verify(gold, pred, timeout)


def configure_math_workers(max_workers: int) -> None:
    """Set the most math-verify worker processes alive at once (closes the current pool)."""
    global _POOL, _POOL_MAX_WORKERS
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    with _POOL_LOCK:
        _POOL_MAX_WORKERS = max_workers
        old, _POOL = _POOL, None
    if old is not None:
        old.close()


def warm_up_math_workers(count: int = 1) -> int:
    """Start `count` math-verify workers now (each imports sympy, ~1-2 s) so the first
    calls do not pay for it. Returns the number of live workers."""
    return _math_pool().warm_up(count)


def shutdown_math_workers() -> None:
    """Stop all math-verify workers (also done at exit). A later call starts new ones."""
    global _POOL
    with _POOL_LOCK:
        old, _POOL = _POOL, None
    if old is not None:
        old.close()


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    if _POOL is not None:
        _POOL.forget_after_fork()
    _POOL = None


atexit.register(shutdown_math_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
