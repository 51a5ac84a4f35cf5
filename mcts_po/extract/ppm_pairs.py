"""`ppm`: rStar-Math process-preference pairs of sibling steps, for a Bradley-Terry value model.

rStar-Math (Guan et al. 2025, `train/sample_rm_data.py`) trains its process preference model on
sibling steps: per parent, the highest-Q children that lead to a correct answer against the
lowest-Q children that lead to a wrong one, with pairs whose Q margin is below 0.5 dropped.
Here, at every parent (the `sibling_groups` rules: `min_visits`, `scope`, `level`):

- positives: children with at least one verified-correct terminal at or below them;
- negatives: children with at least one verified terminal below them and none correct;
- the `ppm_pairs_per_side` highest-Q positives x the `ppm_pairs_per_side` lowest-Q negatives
  (ties: more visits, then the lower id), each pair kept when `q_chosen - q_rejected >=
  ppm_min_q_margin` (default 0.5) and the texts are not near duplicates (`dedup_threshold`).

Columns: TRL's `RewardTrainer` columns first (`prompt` = the parent's state, `chosen`,
`rejected` = the step texts, `margin` = q_chosen - q_rejected, which RewardTrainer reads as
the offset of `-log sigma(r_w - r_l - margin)`), then the `step-dpo` provenance columns
(`mcts_po.extract.step_dpo_pairs.PAIR_COLUMNS`) and the two steps' subtree outcomes.

    from mcts_po.extract.ppm_pairs import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig(ppm_min_q_margin=0.5))
"""

from __future__ import annotations

from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, margin_ok, near_duplicate, sibling_groups
from mcts_po.extract.step_dpo_pairs import PAIR_COLUMNS, pair_row
from mcts_po.extract.value_targets import check_visits, outcome_share, subtree_outcomes
from mcts_po.search.tree import Node, Tree

NAME = "ppm"
DESCRIPTION = "rStar-Math sibling pairs: high-Q step leading to a correct answer vs low-Q step leading to a wrong one"
PAIR_FORMAT = True
VALUE_FORMAT = True  # trains a value model; not part of `--format all`; an empty result is an error

COLUMNS: dict[str, Any] = {
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "margin": "float64",
    **{name: spec for name, spec in PAIR_COLUMNS.items() if name not in ("prompt", "chosen", "rejected")},
    "outcome_chosen": "float64",
    "outcome_rejected": "float64",
}


def high_first(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda c: (-c.q, -c.visits, c.node_id))


def low_first(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda c: (c.q, -c.visits, c.node_id))


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    check_visits(tree)
    outcomes = subtree_outcomes(tree)
    rows = []
    for parent, children in sibling_groups(tree, config, counters):
        positives = [c for c in children if outcomes[c.node_id][1] > 0]
        negatives = [c for c in children if outcomes[c.node_id][0] > 0 and outcomes[c.node_id][1] == 0]
        if not positives or not negatives:
            count_event(counters, "groups_without_correct_and_wrong")
            continue
        k = config.ppm_pairs_per_side
        for chosen in high_first(positives)[:k]:
            for rejected in low_first(negatives)[:k]:
                if not margin_ok(chosen.q, rejected.q, config.ppm_min_q_margin):
                    count_event(counters, "pairs_below_ppm_min_q_margin")
                    continue
                if near_duplicate(chosen.text, rejected.text, config.dedup_threshold):
                    count_event(counters, "pairs_near_duplicate")
                    continue
                base = pair_row(tree, parent, chosen, rejected)
                row = {"prompt": base.pop("prompt"), "chosen": base.pop("chosen"), "rejected": base.pop("rejected"),
                       "margin": float(chosen.q) - float(rejected.q), **base,
                       "outcome_chosen": outcome_share(*outcomes[chosen.node_id]),
                       "outcome_rejected": outcome_share(*outcomes[rejected.node_id])}
                rows.append(row)
    return rows


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
