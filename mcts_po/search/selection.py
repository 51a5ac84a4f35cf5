"""Child selection rules (pure functions): PUCT with MCTS-DPO's prior, and plain UCT.

    score_puct = Q + c * p * sqrt(N_parent) / (1 + N)
    score_uct  = Q + c * sqrt(ln N_parent / N)          (N >= 1; unvisited children first)

Statistics may carry virtual loss (`VirtualLoss`): a leaf already chosen in the current
wave adds `virtual_loss` visits of value -1 to every node on its path, so the next
selection in the same wave is steered elsewhere. Ties go to the lowest node id.

    from mcts_po.search.selection import select_leaf
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

from mcts_po.search.tree import ROOT_INDEX, Node, Tree

ScoreFn = Callable[[float, float, int, float, float], float]


def length_normalised_prior(logprob_sum: float, num_tokens: int, exponent: float) -> float:
    """MCTS-DPO's unnormalised prior exp(sum log pi(a) / |a|^exponent)."""
    return math.exp(logprob_sum / (max(num_tokens, 1) ** exponent))


def normalise_priors(raw: list[float]) -> list[float]:
    total = sum(raw)
    if total <= 0 or not math.isfinite(total):
        return [1.0 / len(raw)] * len(raw)
    return [r / total for r in raw]


def puct_score(q: float, prior: float, visits: float, parent_visits: float, c: float) -> float:
    return q + c * prior * math.sqrt(parent_visits) / (1.0 + visits)


def uct_score(q: float, prior: float, visits: float, parent_visits: float, c: float) -> float:
    if visits <= 0:
        return math.inf
    return q + c * math.sqrt(math.log(max(parent_visits, 1.0)) / visits)


SELECTION_RULES: dict[str, Callable[[float, float, float, float, float], float]] = {
    "puct": puct_score,
    "uct": uct_score,
}


def get_selection_rule(name: str):
    try:
        return SELECTION_RULES[name]
    except KeyError:
        raise ValueError(f"unknown selection rule {name!r}; valid: {', '.join(SELECTION_RULES)}") from None


class VirtualLoss:
    """Pending selections of the current wave, kept beside the tree (never written into it)."""

    def __init__(self, amount: float):
        self.amount = amount
        self.pending: dict[int, int] = defaultdict(int)

    def add_path(self, tree: Tree, leaf_id: int) -> None:
        node = tree.nodes[leaf_id]
        while True:
            self.pending[node.node_id] += 1
            if node.is_root:
                break
            node = tree.nodes[node.parent]

    def stats(self, node: Node) -> tuple[float, float]:
        """(visits, q) of `node` as seen by selection, virtual loss included."""
        extra = self.amount * self.pending.get(node.node_id, 0)
        visits = node.visits + extra
        if visits <= 0:
            return 0.0, node.q
        value_sum = node.q * node.visits - extra  # virtual visits count as value -1
        return visits, value_sum / visits


def select_child(tree: Tree, node_id: int, rule: str, c: float, virtual: VirtualLoss | None = None) -> int:
    score_fn = get_selection_rule(rule)
    parent = tree.nodes[node_id]
    parent_visits = virtual.stats(parent)[0] if virtual else float(parent.visits)
    best_id, best_score = -1, -math.inf
    for child in tree.children(node_id):
        visits, q = virtual.stats(child) if virtual else (float(child.visits), child.q)
        score = score_fn(q, child.prior, visits, parent_visits, c)
        if score > best_score:  # strict: ties keep the lowest id
            best_id, best_score = child.node_id, score
    return best_id


def select_leaf(tree: Tree, rule: str, c: float, virtual: VirtualLoss | None = None) -> int:
    """Descend from the root by `rule` until a node without children; return its id."""
    node_id = ROOT_INDEX
    while tree.nodes[node_id].children:
        node_id = select_child(tree, node_id, rule, c, virtual)
    return node_id
