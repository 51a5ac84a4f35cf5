"""Backup rules (pure functions): plain mean and MCTS-DPO's visit-weighted rule.

A simulation ends at a leaf with a value v in [-1, 1] (the mean of the values of the
children it was just expanded into, or a terminal leaf's verifier value). Backup walks
from that leaf to the root, adding one visit to each node:

- `mean`: W += v, N += 1, Q = W / N at every node on the path.
- `visit_weighted` (MCTS-DPO): every node on the path that has children (the just-expanded
  leaf included) takes N += 1 and recomputes Q = r + gamma * V with
  V = sum(max(1, N_c) * Q_c) / sum(max(1, N_c)) over its children, r = 0 (rewards live at
  the leaves), and W = Q * N; a childless (terminal) leaf takes W += v, N += 1, Q = W / N.

    from mcts_po.search.backup import backup
    backup(tree, leaf_id, value=0.5, rule="mean")
"""

from __future__ import annotations

from mcts_po.search.tree import Node, Tree


def _visit(node: Node, value: float) -> None:
    node.visits += 1
    node.value_sum += value
    node.q = node.value_sum / node.visits


def backup_mean(tree: Tree, leaf_id: int, value: float, gamma: float = 1.0) -> None:
    node = tree.nodes[leaf_id]
    while True:
        _visit(node, value)
        if node.is_root:
            return
        node = tree.nodes[node.parent]


def visit_weighted_value(tree: Tree, node_id: int) -> float:
    weights_and_values = [(max(1, c.visits), c.q) for c in tree.children(node_id)]
    total = sum(w for w, _ in weights_and_values)
    return sum(w * q for w, q in weights_and_values) / total


def backup_visit_weighted(tree: Tree, leaf_id: int, value: float, gamma: float = 1.0) -> None:
    node = tree.nodes[leaf_id]
    while True:
        if node.children:
            node.visits += 1
            node.q = gamma * visit_weighted_value(tree, node.node_id)
            node.value_sum = node.q * node.visits
        else:
            _visit(node, value)
        if node.is_root:
            return
        node = tree.nodes[node.parent]


BACKUP_RULES = {"mean": backup_mean, "visit_weighted": backup_visit_weighted}


def backup(tree: Tree, leaf_id: int, value: float, rule: str = "mean", gamma: float = 1.0) -> None:
    try:
        fn = BACKUP_RULES[rule]
    except KeyError:
        raise ValueError(f"unknown backup rule {rule!r}; valid: {', '.join(BACKUP_RULES)}") from None
    fn(tree, leaf_id, value, gamma)
