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
    value_and_self_eval_quality(trees, {...}, intervals=True)   # + 95 % intervals over trees, paired difference
    outcome_step_nodes(trees)     # the nodes a value model must score for that
"""

from __future__ import annotations

import random
import statistics
from typing import Any, Callable, Sequence

from mcts_po.graphs.run_stats import calibration_table, ranking_auc, rollout_outcomes, subtree_outcomes
from mcts_po.search.tree import Tree

NodeKey = tuple[int, int]  # (tree index, node id)
BOOTSTRAP_RESAMPLES = 1000


def bootstrap_trees(points: Sequence[tuple[int, Any]], statistic: Callable[[list[Any]], float | None],
                    seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float] | None:
    """95 % percentile interval of `statistic(list of values)` over resamples of the trees (each
    point's first item names its tree): the nodes of one tree are not independent, the trees are."""
    by_tree: dict[int, list[Any]] = {}
    for tree, value in points:
        by_tree.setdefault(tree, []).append(value)
    trees = sorted(by_tree)
    rng = random.Random(seed)
    resampled = []
    for _ in range(resamples):
        value = statistic([v for t in (rng.choice(trees) for _ in trees) for v in by_tree[t]])
        if value is not None:
            resampled.append(value)
    if not resampled:
        return None
    resampled.sort()
    return [round(resampled[int(0.025 * len(resampled))], 4), round(resampled[int(0.975 * len(resampled)) - 1], 4)]


def auc_interval(points: Sequence[tuple[int, float, bool]], seed: int = 0) -> list[float] | None:
    """95 % interval over trees of the AUC of (tree, score, outcome) points."""
    return bootstrap_trees([(tree, (score, good)) for tree, score, good in points],
                           lambda sample: ranking_auc(sample), seed)


def paired_auc_difference(points: Sequence[tuple[int, float, float, bool]], seed: int = 0) -> dict[str, Any] | None:
    """AUC of score a minus AUC of score b on the same (tree, a, b, outcome) points, with a paired 95 %
    interval over trees (each resample takes the same trees for both)."""
    def difference(sample):
        a = ranking_auc([(x, good) for x, _, good in sample])
        b = ranking_auc([(y, good) for _, y, good in sample])
        return None if a is None or b is None else a - b

    if not points:
        return None
    observed = difference([(a, b, good) for _, a, b, good in points])
    return {"nodes": len(points), "difference": None if observed is None else round(observed, 4),
            "ci95": bootstrap_trees([(tree, (a, b, good)) for tree, a, b, good in points], difference, seed)}


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
                                outcome: str = "subtree", intervals: bool = False) -> dict[str, Any]:
    """The value model's scores (in [-1, 1], keyed by (tree index, node id)) and the nodes' stored
    self-evaluations against the nodes' outcomes, on the step nodes of `trees`.

    `value_model`: every step node with an outcome (`outcome_step_nodes`: each must have a score;
    None without scores); `self_eval`: those
    of the same step nodes that hold a self-evaluation (None when none does: a search without
    verdicts); `value_model_on_self_eval_nodes`: the value model on exactly the self-evaluated
    nodes, present only when those are fewer than the value model's nodes.

    `intervals`: each AUC gets `auc_ci95`, a 95 % bootstrap interval over trees, and
    `value_minus_self_eval` the paired difference of the two AUCs on the nodes that have both."""
    keys = step_nodes(trees)
    self_eval = {(i, n): float(trees[i].nodes[n].self_eval) for i, n in keys
                 if trees[i].nodes[n].self_eval is not None}
    result: dict[str, Any] = {"outcome": outcome, "trees": len(trees), "step_nodes": len(keys)}
    self_points = outcome_points(trees, self_eval, outcome)
    result["self_eval"] = score_quality(self_points) if self_points else None
    outcomes = [subtree_outcomes(tree) if outcome == "subtree" else rollout_outcomes(tree) for tree in trees] \
        if intervals else []
    if intervals and result["self_eval"]:
        result["self_eval"]["auc_ci95"] = auc_interval([(t, p, bool(outcomes[t][n])) for (t, n), p in self_eval.items()
                                                        if outcomes[t][n] is not None])
    if value_scores is None:
        result["value_model"] = None
        return result
    scored = outcome_step_nodes(trees, outcome)
    missing = [key for key in scored if key not in value_scores]
    if missing:
        raise ValueError(f"{len(missing)} step nodes with an outcome have no value-model score, e.g. (tree, node) {missing[0]}")
    probabilities = {key: value_probability(value_scores[key]) for key in scored}
    result["value_model"] = score_quality(outcome_points(trees, probabilities, outcome))
    if intervals:
        result["value_model"]["auc_ci95"] = auc_interval([(t, p, bool(outcomes[t][n])) for (t, n), p in probabilities.items()])
        result["value_minus_self_eval"] = paired_auc_difference(
            [(t, probabilities[(t, n)], s, bool(outcomes[t][n])) for (t, n), s in self_eval.items()
             if (t, n) in probabilities])
    if self_points and len(self_points) < result["value_model"]["nodes"]:
        result["value_model_on_self_eval_nodes"] = score_quality(
            outcome_points(trees, {k: probabilities[k] for k in self_eval if k in probabilities}, outcome))
    return result
