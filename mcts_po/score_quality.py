"""How well a node score predicts what the search found below the node: AUC, Brier, ECE.

Torch-free. Used by `scripts/compare_self_eval.py` (replayed self-evaluation verdicts) and by the
loop's value phase (`mcts_po/loop_value.py`: value model k against the self-evaluation on the
nodes of round k's fresh trees). The outcome of a node is `graphs.run_stats.subtree_outcomes`
(1: a correct terminal at or below it; 0: verified terminals below, none correct; no outcome:
the node is left out) or `rollout_outcomes`. AUC and Brier are `graphs.run_stats.ranking_auc`
and `calibration_table` (ties count half in the AUC; Brier = mean (p - outcome)^2).

Scores are probabilities in [0, 1]: the self-evaluation's P("yes") as it is, a value model's
score v in [-1, 1] as p = (v + 1) / 2 (`value_probability`), the same map the search uses the
other way round (2 * self_eval - 1).

    from mcts_po.score_quality import outcome_points, score_quality, value_and_self_eval_quality
    score_quality(outcome_points(trees, {(0, 3): 0.8, ...}, "subtree"))   # {"auc": ..., "brier": ...}
    value_and_self_eval_quality(trees, {(0, 3): 0.2, ...})                # value model vs self-eval
    outcome_step_nodes(trees)     # the nodes a value model must score for that
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from mcts_po.graphs.run_stats import calibration_table, rollout_outcomes, subtree_outcomes
from mcts_po.search.tree import Tree

NodeKey = tuple[int, int]  # (tree index, node id)


def outcome_points(trees: Sequence[Tree], scores: dict[NodeKey, float], outcome: str) -> list[tuple[float, bool]]:
    """(score, outcome) of every scored node that has an outcome ("subtree" or "rollout")."""
    points = []
    for tree_index, tree in enumerate(trees):
        outcomes = subtree_outcomes(tree) if outcome == "subtree" else rollout_outcomes(tree)
        for node in tree.nodes:
            key = (tree_index, node.node_id)
            if key in scores and outcomes[node.node_id] is not None:
                points.append((scores[key], bool(outcomes[node.node_id])))
    return points


def score_quality(points: list[tuple[float, bool]]) -> dict[str, Any]:
    """Nodes, good/bad counts, AUC, mean score of good and bad nodes, Brier and ECE (10 bins), rounded to 4 places."""
    table = calibration_table(points, bins=10)
    good = [s for s, r in points if r]
    bad = [s for s, r in points if not r]
    return {
        "nodes": len(points), "good": len(good), "bad": len(bad),
        "auc": None if table.auc is None else round(table.auc, 4),
        "mean_score_good": round(statistics.fmean(good), 4) if good else None,
        "mean_score_bad": round(statistics.fmean(bad), 4) if bad else None,
        "brier": None if table.brier is None else round(table.brier, 4),
        "ece": None if table.ece is None else round(table.ece, 4),
    }


def step_nodes(trees: Sequence[Tree]) -> list[NodeKey]:
    """(tree index, node id) of every non-terminal step node (depth >= 1, not a plan step): the
    nodes whose value the search takes from self-evaluation, rollout or value model."""
    return [(i, n.node_id) for i, t in enumerate(trees) for n in t.nodes
            if n.depth >= 1 and not n.terminal and n.kind != "plan"]


def outcome_step_nodes(trees: Sequence[Tree], outcome: str = "subtree") -> list[NodeKey]:
    """The step nodes that have an outcome: the only ones AUC and Brier are over, so the only ones
    a value model needs to score for `value_and_self_eval_quality` (about a fifth of the step nodes
    of a loop search: most have no verified terminal below)."""
    outcomes = [subtree_outcomes(tree) if outcome == "subtree" else rollout_outcomes(tree) for tree in trees]
    return [(t, n) for t, n in step_nodes(trees) if outcomes[t][n] is not None]


def value_probability(value: float) -> float:
    """A value in [-1, 1] as a probability of success: (v + 1) / 2, clamped to [0, 1]."""
    return min(1.0, max(0.0, (float(value) + 1.0) / 2.0))


def value_and_self_eval_quality(trees: Sequence[Tree], value_scores: dict[NodeKey, float] | None,
                                outcome: str = "subtree") -> dict[str, Any]:
    """The value model's scores (in [-1, 1], keyed by (tree index, node id)) and the nodes' stored
    self-evaluations against the nodes' outcomes, on the step nodes of `trees`.

    `value_model`: every step node with an outcome (`outcome_step_nodes`: each must have a score;
    None without scores); `self_eval`: those
    of the same step nodes that hold a self-evaluation (None when none does: a search without
    verdicts); `value_model_on_self_eval_nodes`: the value model on exactly the self-evaluated
    nodes, present only when those are fewer than the value model's nodes."""
    keys = step_nodes(trees)
    self_eval = {(i, n): float(trees[i].nodes[n].self_eval) for i, n in keys
                 if trees[i].nodes[n].self_eval is not None}
    result: dict[str, Any] = {"outcome": outcome, "trees": len(trees), "step_nodes": len(keys)}
    self_points = outcome_points(trees, self_eval, outcome)
    result["self_eval"] = score_quality(self_points) if self_points else None
    if value_scores is None:
        result["value_model"] = None
        return result
    scored = outcome_step_nodes(trees, outcome)
    missing = [key for key in scored if key not in value_scores]
    if missing:
        raise ValueError(f"{len(missing)} step nodes with an outcome have no value-model score, e.g. (tree, node) {missing[0]}")
    probabilities = {key: value_probability(value_scores[key]) for key in scored}
    result["value_model"] = score_quality(outcome_points(trees, probabilities, outcome))
    if self_points and len(self_points) < result["value_model"]["nodes"]:
        result["value_model_on_self_eval_nodes"] = score_quality(
            outcome_points(trees, {k: probabilities[k] for k in self_eval if k in probabilities}, outcome))
    return result
