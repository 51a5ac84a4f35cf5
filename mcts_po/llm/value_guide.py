"""ValueGuide: a trained value model scoring a search wave's new nodes, in one batched call.

Torch-free at import: the model is loaded on first use, by one of two backends:
`transformers` (`mcts_po.train.value_model.ValueScorer`: the whole path through the model, CPU or
GPU) or `vllm` (`mcts_po.backends.vllm_value.VLLMValueScorer`: vLLM's pooling runner with prefix
caching, so a child's score computes little past its parent's cached path). The text scored for a node is `mcts_po.llm.node_text.value_path` (stored root prompt + path
steps), the same split `mcts-po extract --format value` writes for training, so the search and
the training see a path alike. `LLMSearchPolicy(..., value_guide=ValueGuide(dir))` puts the
scores into `NodeEvaluation.value_model`; the search core only sees the numbers.

    guide = ValueGuide("runs/value_model", backend="vllm")
    scores = guide.score(trees, [(tree_index, node_id), ...])   # one score in [-1, 1] each
    guide.seconds, guide.load_seconds, guide.nodes, guide.calls  # time in the model, nodes scored
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from mcts_po.llm import node_text
from mcts_po.search.tree import Tree


VALUE_BACKENDS = ("transformers", "vllm")


class ValueGuide:
    def __init__(self, path: str, device: str = "auto", batch_size: int = 16, scorer: Any = None,
                 backend: str = "transformers"):
        """`scorer`: anything with `score_paths(prompts, step_lists) -> per-path step scores`
        (tests pass a scripted one); None loads the `backend`'s scorer lazily (`device` and
        `batch_size` are the transformers scorer's; vLLM batches and places itself)."""
        if backend not in VALUE_BACKENDS:
            raise ValueError(f"value model backend {backend!r} is not one of: {', '.join(VALUE_BACKENDS)}")
        self.path = str(path)
        self.device = device
        self.batch_size = int(batch_size)
        self.backend = backend
        self._scorer = scorer
        self.calls = 0  # score() calls that reached the model (one per wave with nodes to score)
        self.nodes = 0  # nodes scored
        self.seconds = 0.0  # wall seconds inside score() (loading the scorer included)
        self.load_seconds = 0.0  # of which loading the scorer (a vLLM engine's start is most of it)

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            started = time.perf_counter()
            self._scorer = self._load()
            self.load_seconds += time.perf_counter() - started
        return self._scorer

    def _load(self) -> Any:
        if self.backend == "vllm":
            from mcts_po.backends.vllm_value import VLLMValueScorer  # vllm and torch only now

            return VLLMValueScorer(self.path)
        from mcts_po.train.value_model import ValueScorer  # torch only now

        return ValueScorer(self.path, device=self.device, batch_size=self.batch_size)

    @staticmethod
    def texts(trees: Sequence[Tree], nodes: Sequence[tuple[int, int]]) -> list[tuple[str, list[str]]]:
        """The (prompt, steps) scored for each (tree index, node id)."""
        return [node_text.value_path(trees[t], n) for t, n in nodes]

    def score(self, trees: Sequence[Tree], nodes: Sequence[tuple[int, int]]) -> list[float]:
        """The value model's score of each node's newest step, all nodes in one scorer call."""
        if not nodes:
            return []
        pairs = self.texts(trees, nodes)
        started = time.perf_counter()
        scorer = self.scorer
        prompts, step_lists = [p for p, _ in pairs], [s for _, s in pairs]
        if hasattr(scorer, "score_last_steps"):
            scores = scorer.score_last_steps(prompts, step_lists)
        else:
            scores = [per_path[-1] for per_path in scorer.score_paths(prompts, step_lists)]
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.nodes += len(nodes)
        return [float(score) for score in scores]

    def close(self, other_engines_live: bool = False) -> None:
        """Free the scorer (a vLLM engine holds its KV cache until closed). With
        `other_engines_live` (the search's vLLM engine goes on serving in this process), a vLLM
        scorer is kept alive instead: its shutdown would break that engine (VLLMValueScorer.close)."""
        scorer, self._scorer = self._scorer, None
        if scorer is None:
            return
        if other_engines_live and hasattr(scorer, "keep_alive"):
            scorer.keep_alive()
        elif hasattr(scorer, "close"):
            scorer.close()
