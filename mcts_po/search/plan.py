"""Plan trees (CPL): which level a node belongs to and when a plan is complete.

A plan tree (`SearchConfig.tree == "plan"`, `Tree.tree_kind == "plan"`) has two levels:

    root
    ├── plan step        kind="plan": one short abstract strategy step (no arithmetic)
    │   ├── plan step
    │   │   └── "Now solve."   kind="plan", the plan-end marker (PLAN_END_TEXT)
    │   │       ├── step       kind="step": solution steps, verified at the end
    │   │       └── step
    ...

A plan node's plan is *complete* when the node is the plan-end marker (the policy writes
`PLAN_END_TEXT` when the model ends its plan: it stops writing, or writes a line such as
"Now solve.") or when it sits at `max_plan_depth`. Children of an incomplete plan are
plan steps; children of a complete plan, and of solution steps, are solution steps. Plan
nodes are never terminal: their values come from the solutions (rollouts and verified
terminals) below them through the ordinary backup.

This module knows the tree's structure only, no prompts: which text continues which node
(the plan prompt with the plan steps while the plan is open, the solution prompt with the
plan written in and the solution steps below a complete plan) is built by
`mcts_po.llm.node_text`, for the search and for extraction alike.

    from mcts_po.search.plan import child_kind, plan_steps
    child_kind(tree, node_id, max_plan_depth=3)     # "plan" or "step"
    plan_steps(tree, node_id)                       # the plan step texts on the path
"""

from __future__ import annotations

from mcts_po.search.tree import Node, Tree

PLAN_END_TEXT = "Now solve."
DEFAULT_MAX_PLAN_DEPTH = 3
EXTRA_KEY = "plan"  # Tree.extra[EXTRA_KEY]: the plan's metadata (mcts_po.llm.node_text.plan_metadata)


def normalise_line(text: str) -> str:
    return " ".join(text.split())


def is_plan_end(node: Node) -> bool:
    """True for the plan-end marker node."""
    return node.kind == "plan" and normalise_line(node.text) == PLAN_END_TEXT


def plan_is_complete(node: Node, max_plan_depth: int) -> bool:
    """A plan node ends the plan when it is the marker or sits at `max_plan_depth`."""
    return node.kind == "plan" and (is_plan_end(node) or node.depth >= max_plan_depth)


def child_kind(tree: Tree, node_id: int, max_plan_depth: int) -> str:
    """The kind of the children `node_id` is expanded into in a plan tree."""
    node = tree.nodes[node_id]
    if node.kind == "root":
        return "plan"
    if node.kind == "plan" and not plan_is_complete(node, max_plan_depth):
        return "plan"
    return "step"


def plan_steps(tree: Tree, node_id: int) -> list[str]:
    """The plan step texts on the path to `node_id` (the plan-end marker left out)."""
    return [n.text for n in tree.path(node_id) if n.kind == "plan" and not is_plan_end(n)]


def solution_steps(tree: Tree, node_id: int) -> list[str]:
    """The solution step texts on the path to `node_id` (plan steps left out)."""
    return [n.text for n in tree.path(node_id) if n.kind == "step"]


def solution_nodes(tree: Tree, node_id: int) -> list[Node]:
    return [n for n in tree.path(node_id) if n.kind == "step"]


def continues_plan(tree: Tree, node_id: int, max_plan_depth: int) -> bool:
    """True when the text that continues `node_id` is the plan prompt (its children are plan steps)."""
    return child_kind(tree, node_id, max_plan_depth) == "plan"


# ---------------------------------------------------------------------------- reading a stored tree
def tree_max_plan_depth(tree: Tree) -> int:
    meta = tree.extra.get(EXTRA_KEY) or {}
    if "max_plan_depth" in meta:
        return int(meta["max_plan_depth"])
    return int(tree.search_config.get("max_plan_depth", DEFAULT_MAX_PLAN_DEPTH))


def level_steps(tree: Tree, node_id: int) -> list[str]:
    """The steps of the level that continues `node_id`: plan steps while the plan is open,
    else the solution steps (what a pair row's `initial_reason_steps` holds)."""
    if continues_plan(tree, node_id, tree_max_plan_depth(tree)):
        return plan_steps(tree, node_id)
    return solution_steps(tree, node_id)
