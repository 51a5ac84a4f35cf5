"""`dpo`: full-trajectory pairs, a verified-correct vs a verified-wrong solution of one problem.

Plain DPO data in TRL's columns (`prompt` = the rendered question, `chosen`, `rejected` =
whole solutions, steps joined by a blank line) plus provenance. Only trajectories with a
verdict take part (`correct` True vs False), each text once (equal after normalisation:
the best-ranked is kept). Both lists are ranked (mean step Q, then
terminal id); pairs are taken along anti-diagonals of (i-th correct, j-th wrong), i.e. by
i + j then i, so the first pairs use different trajectories; pairs whose texts are
near-identical from the step where their paths part are dropped (`dedup_threshold`), and at most `max_pairs_per_tree` are kept (0 = all).

    from mcts_po.extract.trajectory_pairs import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig(max_pairs_per_tree=4))
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, ends_solution, near_duplicate
from mcts_po.extract.tree_text import Trajectory, complete_trajectories, distinct_texts, join_steps, root_prompt, step_delimiter
from mcts_po.search.tree import Tree

NAME = "dpo"
DESCRIPTION = "full-trajectory pairs: a verified-correct vs a verified-wrong solution of the same problem"

COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "question": "string",
    "answer": "string",
    "dataset": "string",
    "tree_id": "string",
    "problem_id": "string",
    "chosen_id": "int64",
    "rejected_id": "int64",
    "q_chosen": "float64",
    "q_rejected": "float64",
    "value_chosen": "float64",
    "value_rejected": "float64",
    "num_steps_chosen": "int64",
    "num_steps_rejected": "int64",
    "chosen_answer": "string",
    "rejected_answer": "string",
    "chosen_ends_solution": "bool",
    "rejected_ends_solution": "bool",
    "step_delimiter": "string",
}
PAIR_FORMAT = True


def ordered_pairs(correct: list[Trajectory], wrong: list[Trajectory]) -> list[tuple[Trajectory, Trajectory]]:
    index_pairs = sorted(((i, j) for i in range(len(correct)) for j in range(len(wrong))), key=lambda p: (p[0] + p[1], p[0]))
    return [(correct[i], wrong[j]) for i, j in index_pairs]


def diverging_texts(a: Trajectory, b: Trajectory) -> tuple[str, str]:
    """The two solutions from the first step where their paths part (a shared prefix of
    nodes says nothing about the preference, so it does not count towards similarity)."""
    shared = 0
    while shared < min(len(a.nodes), len(b.nodes)) and a.nodes[shared].node_id == b.nodes[shared].node_id:
        shared += 1
    return join_steps(a.steps[shared:], a.delimiter), join_steps(b.steps[shared:], b.delimiter)


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    ranked = distinct_texts(complete_trajectories(tree))
    correct = [t for t in ranked if t.terminal.correct is True]
    wrong = [t for t in ranked if t.terminal.correct is False]
    rows = []
    for chosen, rejected in ordered_pairs(correct, wrong):
        if config.max_pairs_per_tree and len(rows) >= config.max_pairs_per_tree:
            count_event(counters, "pairs_over_max_pairs_per_tree")
            continue
        if near_duplicate(*diverging_texts(chosen, rejected), config.dedup_threshold):
            count_event(counters, "pairs_near_duplicate")
            continue
        rows.append({
            "prompt": root_prompt(tree),
            "chosen": chosen.text,
            "rejected": rejected.text,
            "question": tree.question,
            "answer": tree.gold_answer,
            "dataset": tree.task,
            "tree_id": tree.tree_id,
            "problem_id": tree.problem_id,
            "chosen_id": chosen.terminal.node_id,
            "rejected_id": rejected.terminal.node_id,
            "q_chosen": float(chosen.terminal.q),
            "q_rejected": float(rejected.terminal.q),
            "value_chosen": chosen.value,
            "value_rejected": rejected.value,
            "num_steps_chosen": len(chosen.nodes),
            "num_steps_rejected": len(rejected.nodes),
            "chosen_answer": chosen.terminal.answer,
            "rejected_answer": rejected.terminal.answer,
            "chosen_ends_solution": ends_solution(chosen.terminal),
            "rejected_ends_solution": ends_solution(rejected.terminal),
            "step_delimiter": step_delimiter(tree),
        })
    return rows


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
