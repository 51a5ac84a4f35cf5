"""`step-apo`: sibling-step pairs carrying Q values for Step-APO's advantage offset (CPL).

CPL (Wang et al. 2024) trains with `-log sigma(beta * (ratio_w - ratio_l) - alpha * (Q_w - Q_l))`;
since both steps share the parent state, `A_w - A_l = Q_w - Q_l`, so each row carries
`q_chosen`, `q_rejected` and the parent's value `q_parent`. Two pairing rules
(`ExtractConfig.apo_rule`):

- `cpl`: at each parent, every sibling whose Q is above the baseline is paired with every
  sibling whose Q is below it (baseline: the parent's Q, or 0 with `apo_baseline="zero"`);
  a sibling exactly at the baseline is in neither set;
- `margin`: every sibling pair whose Q gap is at least `min_q_margin` (and > 0).

Columns: the `step-dpo` columns plus `q_parent` and `q_baseline` (the baseline used).

    from mcts_po.extract.step_apo_pairs import rows_from_trees
    rows = rows_from_trees(trees, ExtractConfig(apo_rule="cpl", apo_baseline="zero"))
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import Q_TOLERANCE, sibling_groups
from mcts_po.extract.step_dpo_pairs import PAIR_COLUMNS, filter_and_cap, pair_row
from mcts_po.search.tree import Node, Tree

NAME = "step-apo"
DESCRIPTION = "sibling-step pairs with Q values and the parent value, for the Step-APO advantage offset"

COLUMNS: dict[str, Any] = {**PAIR_COLUMNS, "q_parent": "float64", "q_baseline": "float64"}
PAIR_FORMAT = True


def baseline_value(parent: Node, config: ExtractConfig) -> float:
    return float(parent.q) if config.apo_baseline == "parent" else 0.0


def cpl_pairs(children: list[Node], baseline: float) -> list[tuple[Node, Node]]:
    """Every (above-baseline, below-baseline) sibling pair, in node-id order."""
    above = [c for c in children if c.q > baseline + Q_TOLERANCE]
    below = [c for c in children if c.q < baseline - Q_TOLERANCE]
    return [(w, l) for w in above for l in below]


def margin_pairs(children: list[Node]) -> list[tuple[Node, Node]]:
    """Every sibling pair ordered higher-Q first (ties are left to the margin rule to drop)."""
    out = []
    for a, b in combinations(children, 2):
        out.append((a, b) if a.q >= b.q else (b, a))
    return out


def rows_from_tree(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    candidates = []
    baselines: dict[int, float] = {}
    for parent, children in sibling_groups(tree, config, counters):
        baselines[parent.node_id] = baseline_value(parent, config)
        if config.apo_rule == "cpl":
            pairs = cpl_pairs(children, baselines[parent.node_id])
        else:
            pairs = margin_pairs(children)
        candidates.extend((parent, w, l) for w, l in pairs)
    rows = []
    for parent, chosen, rejected in filter_and_cap(tree, candidates, config, counters):
        row = pair_row(tree, parent, chosen, rejected)
        row["q_parent"] = float(parent.q)
        row["q_baseline"] = baselines[parent.node_id]
        rows.append(row)
    return rows


def rows_from_trees(trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    return [row for tree in trees for row in rows_from_tree(tree, config, counters)]
