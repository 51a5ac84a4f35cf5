"""Step-DPO-style sibling pairs for highlighting in the viewer and the text view.

This is a small, display-only rule, kept here so that graphs do not depend on the
extraction module's options: for every expanded node with at least two children, the
child with the highest Q is "chosen" and the child with the lowest Q is "rejected",
when their Q values differ. Ties on Q are broken by more visits, then by the lower
node id (for chosen) and fewer visits, then the higher node id (for rejected), so the
result is deterministic. The datasets `mcts-po extract` writes come from
`mcts_po.extract` and may apply further filters (margins, correct prefixes).

    from mcts_po.graphs.view_pairs import sibling_pairs
    for pair in sibling_pairs(tree): print(pair.parent, pair.chosen, pair.rejected)
"""

from __future__ import annotations

from dataclasses import dataclass

from mcts_po.search.tree import Tree


@dataclass(frozen=True)
class SiblingPair:
    """One preference pair among the children of `parent` (node ids)."""

    parent: int
    chosen: int
    rejected: int
    q_chosen: float
    q_rejected: float


def sibling_pairs(tree: Tree) -> list[SiblingPair]:
    """Highest-Q child vs lowest-Q child of every expanded node, parents in id order."""
    pairs = []
    for node in tree.nodes:
        children = tree.children(node.node_id)
        if len(children) < 2:
            continue
        chosen = max(children, key=lambda c: (c.q, c.visits, -c.node_id))
        rejected = min(children, key=lambda c: (c.q, -c.visits, -c.node_id))
        if chosen.q == rejected.q:
            continue
        pairs.append(SiblingPair(node.node_id, chosen.node_id, rejected.node_id, chosen.q, rejected.q))
    return pairs
