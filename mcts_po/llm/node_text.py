"""The text a node continues, built in one place: for the search and for extraction.

A node's *state* is the prompt its children are sampled from; a *rollout prompt* is where a
rollout from it starts. The search's policy (`mcts_po.llm.policy`) sends them to the engine,
and extraction (`mcts_po.extract.tree_text`) rebuilds the same bytes from a stored tree, so a
training prompt is exactly what the policy saw when it proposed the next step.

- Step trees: the root prompt (the task's chat prompt rendered by the model's template)
  followed by each step on the path and the step delimiter (`state_text`). Children extend
  their parent's text token for token, and siblings share it whole (the prefix cache serves
  both).
- Plan trees (CPL; which level a node is on is `mcts_po.search.plan`'s business): while the
  plan is open, the plan prompt + the plan steps; below a complete plan, the *solution
  prompt* (a template rendered once per problem with `PLAN_PLACEHOLDER` where the plan goes,
  stored in `Tree.extra["plan"]`) with the plan so far written in + the solution steps
  (`plan_state_text`). A rollout from any plan-tree node starts from the solution prompt
  (`plan_rollout_prompt`).

Reading a stored tree (`stored_node_text`): the delimiter is `tree.sampling["step_delimiter"]`
(a newline by default). Hand-built trees may lack a prompt: the question followed by a
newline (step trees) or by the tree's delimiter (plan trees) stands in for it, and a plan
tree without a stored template gets plan prompt + plan + "Now solve." as its solution prompt.

Pure Python, no torch, no tokenizer: it reads `Tree`s and strings only.

    from mcts_po.llm.node_text import stored_node_text, state_text
    state_text("<prompt>", ["2 + 3 = 5."], "\\n")     # '<prompt>2 + 3 = 5.\\n'
    prompt, steps_part = stored_node_text(tree, node_id)
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.search import plan
from mcts_po.search.tree import Tree
from mcts_po.tasks.base import STEP_DELIMITER

PLAN_PLACEHOLDER = "<<MCTS_PO_PLAN>>"  # where the plan goes in a stored solution prompt template
EMPTY_PLAN_TEXT = "(no plan)"  # the plan written into the solution prompt before any plan step


def steps_text(steps: Sequence[str], delimiter: str) -> str:
    """Steps each followed by the delimiter: "" for no steps, "a\\nb\\n" for two."""
    return "".join(step + delimiter for step in steps)


def state_text(root_prompt: str, steps: Sequence[str], delimiter: str) -> str:
    """A step-tree node's state: the root prompt plus each step on its path and its delimiter."""
    return root_prompt + steps_text(steps, delimiter)


# ---------------------------------------------------------------------------- plan trees
def plan_text(steps: Sequence[str]) -> str:
    """The plan as it is written into the solution prompt: one step per line."""
    lines = [plan.normalise_line(s) for s in steps if plan.normalise_line(s)]
    return "\n".join(lines) if lines else EMPTY_PLAN_TEXT


def solution_prompt(template: str, plan_steps: Sequence[str]) -> str:
    """The solution prompt for a plan: the stored template with the plan in place."""
    if PLAN_PLACEHOLDER not in template:
        raise ValueError(f"the solution prompt template has no {PLAN_PLACEHOLDER} placeholder")
    return template.replace(PLAN_PLACEHOLDER, plan_text(plan_steps))


def plan_rollout_prompt(tree: Tree, node_id: int, solution_template: str, delimiter: str) -> str:
    """The solution prompt with the plan so far + the solution steps so far: where a rollout
    from `node_id` (a plan node, complete or not, or a solution step) starts."""
    prompt = solution_prompt(solution_template, plan.plan_steps(tree, node_id))
    return prompt + steps_text(plan.solution_steps(tree, node_id), delimiter)


def plan_state_text(tree: Tree, node_id: int, plan_prompt: str, solution_template: str,
                    delimiter: str, max_plan_depth: int) -> str:
    """A plan-tree node's state: plan prompt + plan steps while the plan is open, else the
    solution prompt (with the plan so far) + the solution steps; each step ends with `delimiter`."""
    if plan.continues_plan(tree, node_id, max_plan_depth):
        return plan_prompt + steps_text(plan.plan_steps(tree, node_id), delimiter)
    return plan_rollout_prompt(tree, node_id, solution_template, delimiter)


def plan_metadata(solution_template: str, max_plan_depth: int) -> dict[str, Any]:
    """What a policy stores in `Tree.extra[plan.EXTRA_KEY]` so that a plan tree's texts can be
    rebuilt without it (the plan prompt itself is `Tree.prompt`)."""
    return {
        "solution_prompt_template": solution_template,
        "placeholder": PLAN_PLACEHOLDER,
        "plan_end_text": plan.PLAN_END_TEXT,
        "max_plan_depth": int(max_plan_depth),
    }


# ---------------------------------------------------------------------------- reading a stored tree
def stored_delimiter(tree: Tree) -> str:
    """The delimiter the search ended steps with (`tree.sampling["step_delimiter"]`), else a newline."""
    return str((tree.sampling or {}).get("step_delimiter") or STEP_DELIMITER)


def stored_root_prompt(tree: Tree, delimiter: str = STEP_DELIMITER) -> str:
    """The rendered prompt the search started from, or the question followed by `delimiter`."""
    return tree.prompt if tree.prompt else tree.question.strip() + delimiter


def stored_plan_state_text(tree: Tree, node_id: int) -> str:
    """A stored plan tree's node state. Needs `Tree.prompt` (the rendered plan prompt) and, below
    a complete plan, `Tree.extra["plan"]["solution_prompt_template"]`; without a template
    (hand-built trees) the plan prompt followed by the plan and "Now solve." stands in."""
    delimiter = stored_delimiter(tree)
    plan_prompt = stored_root_prompt(tree, delimiter)
    template = (tree.extra.get(plan.EXTRA_KEY) or {}).get("solution_prompt_template")
    if template is None:
        template = plan_prompt + PLAN_PLACEHOLDER + delimiter + plan.PLAN_END_TEXT + delimiter
    return plan_state_text(tree, node_id, plan_prompt, template, delimiter, plan.tree_max_plan_depth(tree))


def stored_node_text(tree: Tree, node_id: int) -> tuple[str, str]:
    """(the text that continues `node_id` in a stored tree, the steps part of it: the steps of
    the level being continued, each with its delimiter)."""
    delimiter = stored_delimiter(tree)
    if tree.tree_kind == "plan":
        return stored_plan_state_text(tree, node_id), steps_text(plan.level_steps(tree, node_id), delimiter)
    prefix = steps_text(tree.steps(node_id), delimiter)
    return stored_root_prompt(tree) + prefix, prefix


def value_path(tree: Tree, node_id: int) -> tuple[str, list[str]]:
    """The (prompt, steps) a value model scores for `node_id`: the stored root prompt and the
    texts of the path's steps, the split `extract --format value` writes for training."""
    return stored_root_prompt(tree), [node.text for node in tree.path(node_id)]
