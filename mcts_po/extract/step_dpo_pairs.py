"""`step-dpo`: one pair of sibling steps per parent, highest-Q step chosen, lowest-Q rejected.

MCTS-DPO (Xie et al. 2024) / Step-DPO (Lai et al. 2024) pairs: both steps continue the same
prefix, so the pair teaches the single step where the solutions part. Each row carries
TRL's columns (`prompt` = rendered question + prefix steps, `chosen`, `rejected` = the two
step texts), the public Step-DPO columns (`question` = the Step-DPO `prompt`,
`initial_reason_steps`, `full_chosen`, `full_rejected`, `answer`, `dataset`), and the
provenance of the pair (node ids, Q, visits, depth, level, terminal flags).

`chosen_ends_solution` / `rejected_ends_solution` say whether the step finishes the
solution: only then should a trainer append EOS (TRL appends it to every plain-text
completion; see docs/data_formats.md).

    from mcts_po.extract.step_dpo_pairs import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig())
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import (
    best_child,
    cap_pairs,
    count_event,
    ends_solution,
    greedy_continuation,
    margin_ok,
    near_duplicate,
    sibling_groups,
    worst_child,
)
from mcts_po.extract.tree_text import continuation_prompt, join_steps, step_delimiter
from mcts_po.search.tree import Node, Tree

NAME = "step-dpo"
DESCRIPTION = "sibling steps after a shared prefix: highest-Q step chosen, lowest-Q step rejected"

# Column -> type: "string", "int64", "float64", "bool", or a one-element list for List(...).
PAIR_COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "question": "string",
    "initial_reason_steps": "string",
    "full_chosen": "string",
    "full_rejected": "string",
    "answer": "string",
    "dataset": "string",
    "tree_id": "string",
    "problem_id": "string",
    "parent_id": "int64",
    "chosen_id": "int64",
    "rejected_id": "int64",
    "q_chosen": "float64",
    "q_rejected": "float64",
    "visits_chosen": "int64",
    "visits_rejected": "int64",
    "depth": "int64",
    "level": "string",
    "chosen_is_terminal": "bool",
    "rejected_is_terminal": "bool",
    "chosen_ends_solution": "bool",
    "rejected_ends_solution": "bool",
    "step_delimiter": "string",
}
COLUMNS = PAIR_COLUMNS
PAIR_FORMAT = True


def full_text(tree: Tree, node: Node) -> str:
    """The step followed by the search's best continuation below it, down to a leaf."""
    return join_steps([node.text] + [n.text for n in greedy_continuation(tree, node.node_id)], step_delimiter(tree))


def pair_row(tree: Tree, parent: Node, chosen: Node, rejected: Node) -> dict[str, Any]:
    """One row of the shared step-pair schema (`PAIR_COLUMNS`)."""
    prompt, prefix = continuation_prompt(tree, parent.node_id)  # the prompt the step was sampled from
    return {
        "prompt": prompt,
        "chosen": chosen.text,
        "rejected": rejected.text,
        "question": tree.question,
        "initial_reason_steps": prefix,
        "full_chosen": full_text(tree, chosen),
        "full_rejected": full_text(tree, rejected),
        "answer": tree.gold_answer,
        "dataset": tree.task,
        "tree_id": tree.tree_id,
        "problem_id": tree.problem_id,
        "parent_id": parent.node_id,
        "chosen_id": chosen.node_id,
        "rejected_id": rejected.node_id,
        "q_chosen": float(chosen.q),
        "q_rejected": float(rejected.q),
        "visits_chosen": int(chosen.visits),
        "visits_rejected": int(rejected.visits),
        "depth": int(chosen.depth),
        "level": chosen.kind,
        "chosen_is_terminal": bool(chosen.terminal),
        "rejected_is_terminal": bool(rejected.terminal),
        "chosen_ends_solution": ends_solution(chosen),
        "rejected_ends_solution": ends_solution(rejected),
        "step_delimiter": step_delimiter(tree),
    }


def filter_and_cap(tree: Tree, candidates: list[tuple[Node, Node, Node]], config: ExtractConfig,
                   counters: dict[str, int] | None) -> list[tuple[Node, Node, Node]]:
    """Apply the margin, near-duplicate, same-ending and per-tree cap rules to (parent, chosen, rejected)."""
    kept = []
    for parent, chosen, rejected in candidates:
        if not margin_ok(chosen.q, rejected.q, config.min_q_margin):
            count_event(counters, "pairs_tied" if abs(chosen.q - rejected.q) <= 1e-9 else "pairs_below_min_q_margin")
            continue
        if near_duplicate(chosen.text, rejected.text, config.dedup_threshold):
            count_event(counters, "pairs_near_duplicate")
            continue
        if config.same_ending and ends_solution(chosen) != ends_solution(rejected):
            count_event(counters, "pairs_ending_differently")
            continue
        kept.append((parent, chosen, rejected))
    capped = cap_pairs(
        kept,
        config.max_pairs_per_tree,
        margin_of=lambda p: p[1].q - p[2].q,
        order_of=lambda p: (p[0].node_id, p[1].node_id, p[2].node_id),
    )
    count_event(counters, "pairs_over_max_pairs_per_tree", len(kept) - len(capped))
    return capped


def pairs_in_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[tuple[Node, Node, Node]]:
    """(parent, best sibling, worst sibling) per sibling group; with `same_ending`, the worst among
    the siblings that end (or do not end) the solution as the best one does."""
    candidates = []
    for parent, children in sibling_groups(tree, config, counters):
        chosen = best_child(children)
        if config.same_ending:
            children = [c for c in children if ends_solution(c) == ends_solution(chosen)]
            if len(children) < 2:
                count_event(counters, "pairs_ending_differently")
                continue
        candidates.append((parent, chosen, worst_child(children)))
    return filter_and_cap(tree, candidates, config, counters)


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [pair_row(tree, p, c, r) for p, c, r in pairs_in_tree(tree, config, counters)]


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
