"""Tree kinds: what differs between step trees and plan trees in the generic search.

The search driver (`mcts_po.search.mcts.run_search`) knows nothing about plans; it asks a
tree-kind strategy, chosen by `SearchConfig.tree` from `TREE_KIND_STRATEGIES`, two questions:

- `child_kind(tree, leaf_id)`: the kind of node a leaf is expanded into ("step" or "plan");
- `path_budget(tree, parent_id)`: the (depth, tokens) of the path to a parent that count
  against `max_depth` and `max_tokens` when its children are added.

Step trees: every node is a step, and the whole path counts. Plan trees (CPL,
`mcts_po.search.plan`): a leaf whose plan is open is expanded into plan steps, any other
leaf into solution steps, and only solution steps count against the limits.

Pure (no torch, no prompts). A new kind is a small frozen dataclass with these two methods
plus one line in `TREE_KIND_STRATEGIES` (and its name in `mcts_po.search.config.TREE_KINDS`).

    from mcts_po.search.tree_kinds import tree_kind
    kind = tree_kind(SearchConfig(tree="plan", max_plan_depth=2))
    kind.child_kind(tree, 0)      # "plan"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from mcts_po.search import plan
from mcts_po.search.config import SearchConfig
from mcts_po.search.tree import Tree


class TreeKind(Protocol):
    def child_kind(self, tree: Tree, leaf_id: int) -> str:
        ...

    def path_budget(self, tree: Tree, parent_id: int) -> tuple[int, int]:
        ...


@dataclass(frozen=True)
class StepTrees:
    """Every node is a reasoning step; the whole path counts against the limits."""

    def child_kind(self, tree: Tree, leaf_id: int) -> str:
        return "step"

    def path_budget(self, tree: Tree, parent_id: int) -> tuple[int, int]:
        return tree.nodes[parent_id].depth, sum(n.num_tokens for n in tree.path(parent_id))


@dataclass(frozen=True)
class PlanTrees:
    """Plan steps first (until the plan is complete), then solution steps; only solution
    steps count against the depth and token limits."""

    max_plan_depth: int

    def child_kind(self, tree: Tree, leaf_id: int) -> str:
        return plan.child_kind(tree, leaf_id, self.max_plan_depth)

    def path_budget(self, tree: Tree, parent_id: int) -> tuple[int, int]:
        steps = plan.solution_nodes(tree, parent_id)
        return len(steps), sum(n.num_tokens for n in steps)


TREE_KIND_STRATEGIES: dict[str, Callable[[SearchConfig], TreeKind]] = {
    "step": lambda config: StepTrees(),
    "plan": lambda config: PlanTrees(max_plan_depth=config.max_plan_depth),
}


def tree_kind(config: SearchConfig) -> TreeKind:
    """The strategy for `config.tree`."""
    try:
        make = TREE_KIND_STRATEGIES[config.tree]
    except KeyError:
        raise ValueError(f"unknown tree kind {config.tree!r}; valid: {', '.join(TREE_KIND_STRATEGIES)}") from None
    return make(config)
