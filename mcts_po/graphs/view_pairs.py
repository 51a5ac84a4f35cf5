"""Which sibling steps form preference pairs, for highlighting in the viewer and the text view.

Two sources, chosen by name (`PAIR_SOURCES`):

- `extract`: the Step-DPO pairs `mcts-po extract --format step-dpo` writes with its default
  `ExtractConfig` (`mcts_po.extract.step_dpo_pairs.pairs_in_tree`: highest vs lowest Q
  child per parent and step kind, children with >= 1 visit, near-duplicate texts and
  ties dropped). This is what a dataset built from the tree would contain.
- `siblings`: a small display rule kept here so graphs work without the extraction
  module: for every node with at least two children, the highest-Q child is "chosen"
  and the lowest-Q child "rejected", when their Q values differ. Ties on Q: more
  visits, then the lower node id (chosen); more visits, then the higher id (rejected).

`auto` (the default everywhere) uses `extract` when `mcts_po.extract` can be imported and
`siblings` otherwise; `resolve_pair_source` says which one it picked.

    from mcts_po.graphs.view_pairs import view_pairs
    pairs, source = view_pairs(tree)            # list[SiblingPair], "extract" or "siblings"
    for pair in pairs: print(pair.parent, pair.chosen, pair.rejected)
"""

from __future__ import annotations

from dataclasses import dataclass

from mcts_po.io_utils import UserError
from mcts_po.search.tree import Tree

PAIR_SOURCES = ("auto", "extract", "siblings")
PAIR_RULES = {
    "extract": "Step-DPO pairs of mcts_po.extract (default ExtractConfig: highest vs lowest Q sibling, "
               ">= 1 visit, ties and near-duplicate texts dropped)",
    "siblings": "highest-Q vs lowest-Q child of each expanded node (mcts_po.graphs.view_pairs)",
}


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


def _extract_pair_function():
    try:
        from mcts_po.extract.config import ExtractConfig
        from mcts_po.extract.step_dpo_pairs import pairs_in_tree
    except ImportError:
        return None
    return lambda tree: pairs_in_tree(tree, ExtractConfig())


def resolve_pair_source(source: str = "auto") -> str:
    """"extract" or "siblings" for a requested source; UserError for an unknown name or an
    unavailable extraction module."""
    if source not in PAIR_SOURCES:
        raise UserError(f"unknown pair source {source!r}; valid: {', '.join(PAIR_SOURCES)}")
    if source == "siblings":
        return source
    available = _extract_pair_function() is not None
    if source == "extract" and not available:
        raise UserError("pair source 'extract' needs mcts_po.extract.step_dpo_pairs, which cannot be imported")
    return "extract" if available else "siblings"


def extracted_pairs(tree: Tree) -> list[SiblingPair]:
    """The Step-DPO pairs of `mcts_po.extract` with its default config, as SiblingPairs."""
    pair_function = _extract_pair_function()
    if pair_function is None:
        raise UserError("mcts_po.extract.step_dpo_pairs cannot be imported")
    return [SiblingPair(p.node_id, c.node_id, r.node_id, float(c.q), float(r.q)) for p, c, r in pair_function(tree)]


def view_pairs(tree: Tree, source: str = "auto") -> tuple[list[SiblingPair], str]:
    """(pairs to highlight, the source used: "extract" or "siblings")."""
    resolved = resolve_pair_source(source)
    return (extracted_pairs(tree) if resolved == "extract" else sibling_pairs(tree)), resolved
