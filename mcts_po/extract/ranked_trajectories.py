"""`tpo`: Tree Preference Optimization ranked lists (Liao et al. 2024), one row per tree.

Not TRL's Triple Preference Optimization. Each row is a list of complete trajectories of
one problem (root-to-terminal paths of its tree), ranked best first, with each
trajectory's value (+1 / -1 from the verifier, or the terminal's Q without a verdict) and
each trajectory's steps with their per-step Q (what TPO's Adaptive Step Reward reweights)
and node ids.

Selection: trajectories whose texts are equal after normalisation are kept once (the
best-ranked); then up to `max_list_size` are chosen round-robin over the distinct values
(best value group first), so a short list still spans the values the tree found; the
chosen ones are listed in rank order (value, then mean step Q, then terminal id). A tree
whose selected trajectories all have the same value gives no row (no ranking signal).

    from mcts_po.extract.ranked_trajectories import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig(max_list_size=4))
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, ends_solution
from mcts_po.extract.tree_text import Trajectory, complete_trajectories, distinct_texts, rank_key, root_prompt, step_delimiter
from mcts_po.search.tree import Tree

NAME = "tpo"
DESCRIPTION = "Tree Preference Optimization ranked lists (Liao et al. 2024): complete trajectories best first, with per-step values"

COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "question": "string",
    "answer": "string",
    "dataset": "string",
    "tree_id": "string",
    "problem_id": "string",
    "responses": ["string"],
    "values": ["float64"],
    "ends_solution": ["bool"],
    "terminal_ids": ["int64"],
    "steps": [["string"]],
    "step_values": [["float64"]],
    "step_node_ids": [["int64"]],
    "step_levels": [["string"]],
    "num_trajectories": "int64",
    "step_delimiter": "string",
}
PAIR_FORMAT = False


def select_diverse(ranked: list[Trajectory], size: int) -> list[Trajectory]:
    """Round-robin over value groups (best value first), then back in rank order."""
    groups: dict[float, list[Trajectory]] = {}
    for trajectory in ranked:
        groups.setdefault(round(trajectory.value, 9), []).append(trajectory)
    selected: list[Trajectory] = []
    depth = 0
    while len(selected) < size and any(depth < len(g) for g in groups.values()):
        for group in groups.values():
            if depth < len(group) and len(selected) < size:
                selected.append(group[depth])
        depth += 1
    return sorted(selected, key=rank_key)


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    ranked = complete_trajectories(tree)
    unique = distinct_texts(ranked)
    count_event(counters, "trajectories_duplicate_text", len(ranked) - len(unique))
    chosen = select_diverse(unique, config.max_list_size)
    if len({round(t.value, 9) for t in chosen}) < 2:
        count_event(counters, "trees_without_distinct_values")
        return []
    return [{
        "prompt": root_prompt(tree),
        "question": tree.question,
        "answer": tree.gold_answer,
        "dataset": tree.task,
        "tree_id": tree.tree_id,
        "problem_id": tree.problem_id,
        "responses": [t.text for t in chosen],
        "values": [float(t.value) for t in chosen],
        "ends_solution": [ends_solution(t.terminal) for t in chosen],
        "terminal_ids": [t.terminal.node_id for t in chosen],
        "steps": [t.steps for t in chosen],
        "step_values": [[float(n.q) for n in t.nodes] for t in chosen],
        "step_node_ids": [[n.node_id for n in t.nodes] for t in chosen],
        "step_levels": [[n.kind for n in t.nodes] for t in chosen],
        "num_trajectories": len(ranked),
        "step_delimiter": step_delimiter(tree),
    }]


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
