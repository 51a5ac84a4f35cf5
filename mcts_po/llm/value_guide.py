"""ValueGuide: a trained value model scoring a search wave's new nodes, in one batched call.

Torch-free at import: the model (`mcts_po.train.value_model.ValueScorer`) is loaded on first
use. The text scored for a node is `mcts_po.llm.node_text.value_path` (stored root prompt + path
steps), the same split `mcts-po extract --format value` writes for training, so the search and
the training see a path alike. `LLMSearchPolicy(..., value_guide=ValueGuide(dir))` puts the
scores into `NodeEvaluation.value_model`; the search core only sees the numbers.

    guide = ValueGuide("runs/value_model", device="cpu", batch_size=16)
    scores = guide.score(trees, [(tree_index, node_id), ...])   # one score in [-1, 1] each
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.llm import node_text
from mcts_po.search.tree import Tree


class ValueGuide:
    def __init__(self, path: str, device: str = "auto", batch_size: int = 16, scorer: Any = None):
        """`scorer`: anything with `score_paths(prompts, step_lists) -> per-path step scores`
        (tests pass a scripted one); None loads `ValueScorer(path, device, batch_size)` lazily."""
        self.path = str(path)
        self.device = device
        self.batch_size = int(batch_size)
        self._scorer = scorer
        self.calls = 0  # score() calls that reached the model (one per wave with nodes to score)

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from mcts_po.train.value_model import ValueScorer  # torch only now

            self._scorer = ValueScorer(self.path, device=self.device, batch_size=self.batch_size)
        return self._scorer

    @staticmethod
    def texts(trees: Sequence[Tree], nodes: Sequence[tuple[int, int]]) -> list[tuple[str, list[str]]]:
        """The (prompt, steps) scored for each (tree index, node id)."""
        return [node_text.value_path(trees[t], n) for t, n in nodes]

    def score(self, trees: Sequence[Tree], nodes: Sequence[tuple[int, int]]) -> list[float]:
        """The value model's score of each node's newest step, all nodes in one `score_paths` call."""
        if not nodes:
            return []
        pairs = self.texts(trees, nodes)
        self.calls += 1
        per_path = self.scorer.score_paths([p for p, _ in pairs], [s for _, s in pairs])
        return [float(scores[-1]) for scores in per_path]
