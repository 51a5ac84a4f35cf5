"""`step-dpo-repo`: the `step-dpo` pairs in the layout of the Step-DPO repository's own trainer.

dvlab-research/Step-DPO's `train.py` reads `prompt` (the raw question: its
`apply_step_wise_chat_template` wraps it in the template chosen with `--prompt`),
`initial_reason_steps` (appended to the rendered template, after "\\n" for `alpaca`, " " for
`deepseek-math`, nothing for `qwen2-boxed`, when not empty), `chosen` and `rejected` (the next
step; its `StepDPOTrainer` appends no EOS). So a row trains on
`template(prompt) [+ separator] + initial_reason_steps + chosen`. Here:

    prompt                the problem text (stripped), not the rendered chat (`step-dpo` has that)
    initial_reason_steps  the shared prefix steps, each followed by the tree's step delimiter
                          ("" at depth 1), exactly as the search wrote them after its prompt
    chosen, rejected      the two sibling steps (no delimiter, no EOS)
    full_chosen, ...      the step followed by the search's best continuation down to a leaf
    answer, dataset       the gold answer and the task name

then the `step-dpo` provenance columns (node ids, Q, visits, depth, terminal flags). The
trainer's `remove_columns` drops every column it does not map, so they do no harm. Pairs come
from the same rules as `step-dpo` (`step_dpo_pairs.pairs_in_tree`). Plan trees (CPL) give no
rows: their solution prompt holds the plan, which a raw question + prefix cannot carry; they
are counted as `pairs_in_plan_trees`. docs/data_formats.md has the details.

    from mcts_po.extract import extract_rows
    rows = extract_rows(trees, "step-dpo-repo")
    # mcts-po extract --trees RUN --format step-dpo-repo --out DATA
    # accelerate launch train.py configs/config_full.yaml --data_path=DATA/step-dpo-repo.jsonl --prompt=qwen2-boxed
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract import step_dpo_pairs
from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event
from mcts_po.search.tree import Tree

NAME = "step-dpo-repo"
DESCRIPTION = "step-dpo pairs in the Step-DPO repository's layout: prompt = the raw question"

STEP_DPO_REPO_COLUMNS = ("prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen", "full_rejected",
                         "answer", "dataset")
COLUMNS: dict[str, Any] = {
    **{name: "string" for name in STEP_DPO_REPO_COLUMNS},
    **{name: kind for name, kind in step_dpo_pairs.PAIR_COLUMNS.items()
       if name not in STEP_DPO_REPO_COLUMNS and name != "question"},
}
PAIR_FORMAT = True


def repo_row(tree: Tree, trl_row: dict[str, Any]) -> dict[str, Any]:
    """A `step-dpo` row in the Step-DPO repository's layout: `prompt` = the raw question."""
    row = {name: trl_row[name] for name in COLUMNS if name != "prompt"}
    return {"prompt": tree.question.strip(), **row}


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    if tree.tree_kind == "plan":
        count_event(counters, "pairs_in_plan_trees", len(step_dpo_pairs.pairs_in_tree(tree, config)))
        return []
    return [repo_row(tree, step_dpo_pairs.pair_row(tree, parent, chosen, rejected))
            for parent, chosen, rejected in step_dpo_pairs.pairs_in_tree(tree, config, counters)]


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
