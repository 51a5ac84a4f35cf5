"""`sft`: every verified-correct root-to-answer path, as supervised fine-tuning traces.

Columns in TRL's prompt-completion convention (`prompt` = the rendered question,
`completion` = the steps joined by a blank line) and in chat form (`messages`: the question
as the user turn, the solution as the assistant turn; the tree does not store the task's
system message, so `prompt` is the exact text the policy saw). Paths whose solutions are
equal after normalisation are kept once per problem across all trees read (the
best-ranked one, i.e. highest mean step Q).

    from mcts_po.extract.sft_traces import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig())
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, ends_solution, normalise_text
from mcts_po.extract.tree_text import complete_trajectories, root_prompt
from mcts_po.search.tree import Tree

NAME = "sft"
DESCRIPTION = "verified-correct root-to-answer paths (prompt/completion and chat messages)"

COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "completion": "string",
    "messages": [{"role": "string", "content": "string"}],
    "question": "string",
    "answer": "string",
    "dataset": "string",
    "tree_id": "string",
    "problem_id": "string",
    "node_id": "int64",
    "num_steps": "int64",
    "q": "float64",
    "mean_step_q": "float64",
    "predicted_answer": "string",
    "ends_solution": "bool",
}
PAIR_FORMAT = False


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    rows = []
    for tree in trees:
        for trajectory in complete_trajectories(tree):
            if trajectory.terminal.correct is not True:
                continue
            key = (tree.problem_id, normalise_text(trajectory.text))
            if key in seen:
                count_event(counters, "traces_duplicate")
                continue
            seen.add(key)
            completion = trajectory.text
            rows.append({
                "prompt": root_prompt(tree),
                "completion": completion,
                "messages": [{"role": "user", "content": tree.question},
                             {"role": "assistant", "content": completion}],
                "question": tree.question,
                "answer": tree.gold_answer,
                "dataset": tree.task,
                "tree_id": tree.tree_id,
                "problem_id": tree.problem_id,
                "node_id": trajectory.terminal.node_id,
                "num_steps": len(trajectory.nodes),
                "q": float(trajectory.terminal.q),
                "mean_step_q": float(trajectory.mean_q),
                "predicted_answer": trajectory.terminal.answer,
                "ends_solution": ends_solution(trajectory.terminal),
            })
    return rows


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return rows_from_trees([tree], config, counters)
