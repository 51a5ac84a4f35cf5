"""Plan trees (CPL): which level a node belongs to, when a plan is complete, and node prompts.

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

Two prompts: the *plan prompt* (`Tree.prompt`, asks for the plan, one step per line)
continues with the plan steps so far; the *solution prompt* is the task's usual step prompt
with the plan written into it, and continues with the solution steps. The solution prompt
is stored in `Tree.extra["plan"]["solution_prompt_template"]`, rendered by the model's chat
template with `PLAN_PLACEHOLDER` where the plan goes, so extraction can rebuild every
node's prompt from the tree alone (no tokenizer, no torch).

    from mcts_po.search.plan import child_kind, node_state_text
    child_kind(tree, node_id, max_plan_depth=3)     # "plan" or "step"
    node_state_text(tree, node_id)                  # the text the policy continued at node_id
"""

from __future__ import annotations

from typing import Any

from mcts_po.search.tree import Node, Tree

PLAN_END_TEXT = "Now solve."
PLAN_PLACEHOLDER = "<<MCTS_PO_PLAN>>"
EMPTY_PLAN_TEXT = "(no plan)"
DEFAULT_MAX_PLAN_DEPTH = 3
EXTRA_KEY = "plan"  # Tree.extra[EXTRA_KEY]: the plan prompts' metadata


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


def plan_text(steps: list[str]) -> str:
    """The plan as it is written into the solution prompt: one step per line."""
    lines = [normalise_line(s) for s in steps if normalise_line(s)]
    return "\n".join(lines) if lines else EMPTY_PLAN_TEXT


def solution_prompt(template: str, steps: list[str]) -> str:
    """The solution prompt for a plan: the stored template with the plan in place."""
    if PLAN_PLACEHOLDER not in template:
        raise ValueError(f"the solution prompt template has no {PLAN_PLACEHOLDER} placeholder")
    return template.replace(PLAN_PLACEHOLDER, plan_text(steps))


def continues_plan(tree: Tree, node_id: int, max_plan_depth: int) -> bool:
    """True when the text that continues `node_id` is the plan prompt (its children are plan steps)."""
    return child_kind(tree, node_id, max_plan_depth) == "plan"


def state_text(tree: Tree, node_id: int, plan_prompt: str, solution_template: str,
               delimiter: str, max_plan_depth: int) -> str:
    """The prompt that continues `node_id`: plan prompt + plan steps while the plan is open,
    else the solution prompt (with the plan so far) + the solution steps; each step ends
    with `delimiter`."""
    if continues_plan(tree, node_id, max_plan_depth):
        return plan_prompt + "".join(s + delimiter for s in plan_steps(tree, node_id))
    return rollout_prompt(tree, node_id, solution_template, delimiter)


def rollout_prompt(tree: Tree, node_id: int, solution_template: str, delimiter: str) -> str:
    """The solution prompt with the plan so far + the solution steps so far: where a rollout
    from `node_id` (a plan node, complete or not, or a solution step) starts."""
    prompt = solution_prompt(solution_template, plan_steps(tree, node_id))
    return prompt + "".join(s + delimiter for s in solution_steps(tree, node_id))


# ---------------------------------------------------------------------------- reading a stored tree
def plan_metadata(solution_template: str, max_plan_depth: int) -> dict[str, Any]:
    """What a policy stores in `Tree.extra[EXTRA_KEY]` so a plan tree can be read without it
    (the plan prompt itself is `Tree.prompt`)."""
    return {
        "solution_prompt_template": solution_template,
        "placeholder": PLAN_PLACEHOLDER,
        "plan_end_text": PLAN_END_TEXT,
        "max_plan_depth": int(max_plan_depth),
    }


def tree_max_plan_depth(tree: Tree) -> int:
    meta = tree.extra.get(EXTRA_KEY) or {}
    if "max_plan_depth" in meta:
        return int(meta["max_plan_depth"])
    return int(tree.search_config.get("max_plan_depth", DEFAULT_MAX_PLAN_DEPTH))


def tree_delimiter(tree: Tree, default: str) -> str:
    return str(tree.sampling.get("step_delimiter") or default)


def node_state_text(tree: Tree, node_id: int, default_delimiter: str = "\n") -> str:
    """The prompt the policy continued at `node_id`, rebuilt from a stored plan tree.

    Needs `Tree.prompt` (the rendered plan prompt) and, below a complete plan,
    `Tree.extra["plan"]["solution_prompt_template"]`; without a template (hand-built
    trees) the plan prompt followed by the plan and then the solution steps stands in."""
    delimiter = tree_delimiter(tree, default_delimiter)
    meta = tree.extra.get(EXTRA_KEY) or {}
    plan_prompt = tree.prompt if tree.prompt else tree.question.strip() + delimiter
    template = meta.get("solution_prompt_template")
    max_depth = tree_max_plan_depth(tree)
    if template is None:
        template = plan_prompt + PLAN_PLACEHOLDER + delimiter + PLAN_END_TEXT + delimiter
    return state_text(tree, node_id, plan_prompt, template, delimiter, max_depth)


def level_steps(tree: Tree, node_id: int) -> list[str]:
    """The steps of the level that continues `node_id`: plan steps while the plan is open,
    else the solution steps (what a pair row's `initial_reason_steps` holds)."""
    if continues_plan(tree, node_id, tree_max_plan_depth(tree)):
        return plan_steps(tree, node_id)
    return solution_steps(tree, node_id)
