"""`value`: per-step value targets read off a tree, in TRL's stepwise-supervision shape.

For a value model (AlphaMath-style regression, ReST-MCTS*): one row per maximal root-to-node
path, `prompt` (the rendered question, as `sft` renders it), `completions` (the step texts of
the path) and `labels` (one float per step: the node's Q, the mean of the values backed up
through it, in [-1, 1]); beside them, per step, `visits`, `outcome` (the share of the verified
terminals at or below the node that are correct) and `verified_below` (how many verified
terminals that share is over; `outcome` is None where that is 0), and the `node_ids`.

De-duplication: a path's prefixes are inside the path itself, so only maximal paths are rows:
a row ends at a node none of whose children has `min_visits` visits (a leaf when
`min_visits` <= 1). A node near the root still lies on several rows (one per maximal path
below it); `node_ids` lets a trainer count each (tree_id, node_id) once (`mcts-po train
--method value` does: each occurrence weighs 1 / occurrences).

Rules: nodes with fewer than `ExtractConfig.min_visits` visits are cut off (with everything
below them); plan trees are skipped (their state switches prompts at the plan's end, so no
single `prompt` + steps renders it; counted as `plan_trees_skipped`). A tree with steps but
no visits anywhere (never searched, or built by hand without visits) is refused.

    from mcts_po.extract.value_targets import rows_from_trees, subtree_outcomes
    rows = rows_from_trees(trees, ExtractConfig(min_visits=2))
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, ends_solution
from mcts_po.llm import node_text
from mcts_po.io_utils import UserError
from mcts_po.search.tree import ROOT_INDEX, Tree

NAME = "value"
DESCRIPTION = "per-step value targets of maximal root-to-node paths (prompt, completions, labels = Q)"
PAIR_FORMAT = False
VALUE_FORMAT = True  # trains a value model; not part of `--format all`; an empty result is an error

COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "completions": ["string"],
    "labels": ["float64"],
    "visits": ["int64"],
    "outcome": ["float64"],
    "verified_below": ["int64"],
    "node_ids": ["int64"],
    "question": "string",
    "answer": "string",
    "dataset": "string",
    "tree_id": "string",
    "problem_id": "string",
    "num_steps": "int64",
    "ends_solution": "bool",
    "correct": "bool",
}


def check_visits(tree: Tree) -> None:
    """Refuse a tree whose steps carry no visits: its Q values were never backed up."""
    if len(tree.nodes) > 1 and not any(node.visits > 0 for node in tree.nodes[1:]):
        raise UserError(f"tree {tree.tree_id!r} (problem {tree.problem_id!r}): none of its {len(tree.nodes) - 1} "
                        "steps has a visit, so it has no backed-up values to learn from (a tree that was never "
                        "searched?); value data needs searched trees")


def subtree_outcomes(tree: Tree) -> list[tuple[int, int]]:
    """Per node id: (verified terminals at or below it, of those the correct ones). A verified
    terminal is one whose `correct` is True or False (a verdict was given)."""
    counts = [[0, 0] for _ in tree.nodes]
    for node in reversed(tree.nodes):  # children always have larger ids than their parent
        if node.terminal and node.correct is not None:
            counts[node.node_id][0] += 1
            counts[node.node_id][1] += int(node.correct)
        if not node.is_root:
            counts[node.parent][0] += counts[node.node_id][0]
            counts[node.parent][1] += counts[node.node_id][1]
    return [(verified, correct) for verified, correct in counts]


def outcome_share(verified: int, correct: int) -> float | None:
    return correct / verified if verified else None


def maximal_path_ends(tree: Tree, min_visits: int) -> list[int]:
    """Ids of the nodes that end a maximal path of nodes with >= min_visits visits, in id order."""
    kept = {ROOT_INDEX}
    ends = []
    for node in tree.nodes[1:]:
        if node.parent in kept and node.visits >= min_visits:
            kept.add(node.node_id)
    for node_id in sorted(kept - {ROOT_INDEX}):
        if not any(child in kept for child in tree.nodes[node_id].children):
            ends.append(node_id)
    return ends


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    check_visits(tree)
    if tree.tree_kind == "plan":
        count_event(counters, "plan_trees_skipped")
        return []
    outcomes = subtree_outcomes(tree)
    below = sum(1 for node in tree.nodes[1:] if node.visits < config.min_visits)
    count_event(counters, "steps_below_min_visits", below)
    rows = []
    for end in maximal_path_ends(tree, config.min_visits):
        path = tree.path(end)
        last = path[-1]
        prompt, completions = node_text.value_path(tree, end)
        rows.append({
            "prompt": prompt,
            "completions": completions,
            "labels": [float(node.q) for node in path],
            "visits": [int(node.visits) for node in path],
            "outcome": [outcome_share(*outcomes[node.node_id]) for node in path],
            "verified_below": [outcomes[node.node_id][0] for node in path],
            "node_ids": [node.node_id for node in path],
            "question": tree.question,
            "answer": tree.gold_answer,
            "dataset": tree.task,
            "tree_id": tree.tree_id,
            "problem_id": tree.problem_id,
            "num_steps": len(path),
            "ends_solution": ends_solution(last),
            "correct": last.correct if last.terminal else None,
        })
    return rows


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
