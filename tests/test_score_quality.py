"""Intervals of the score-quality figures: a bootstrap over trees, an AUC interval and a paired
AUC difference (what scripts/bench_value.py reports for a value model against the self-evaluation).

    pytest tests/test_score_quality.py -q
"""

from __future__ import annotations

from test_loop_value import VALUE_SCORE, round_trees

from mcts_po.score_quality import auc_interval, bootstrap_trees, paired_auc_difference, value_and_self_eval_quality


def test_bootstrap_resamples_whole_trees():
    # every tree holds the same values: every resample has the same mean
    assert bootstrap_trees([(0, 1.0), (0, 3.0), (1, 1.0), (1, 3.0)], lambda v: sum(v) / len(v)) == [2.0, 2.0]
    # one tree with mean 0, one with mean 10: a resample is (0,0), (0,10) or (10,10) in trees
    low, high = bootstrap_trees([(0, 0.0), (1, 10.0), (1, 10.0)], lambda v: sum(v) / len(v), seed=3)
    assert (low, high) == (0.0, 10.0)
    # a statistic that is undefined on every resample gives no interval
    assert bootstrap_trees([(0, 1.0)], lambda v: None) is None
    assert bootstrap_trees([(0, 1.0), (1, 2.0)], lambda v: sum(v), seed=7) == bootstrap_trees(
        [(0, 1.0), (1, 2.0)], lambda v: sum(v), seed=7)


def test_auc_interval_and_paired_difference_over_trees():
    # in each of three trees the good node scores above the bad one under a, below it under b
    points = [(t, a, b, good) for t in range(3) for a, b, good in ((0.9, 0.1, True), (0.2, 0.8, False))]
    assert auc_interval([(t, a, good) for t, a, _, good in points]) == [1.0, 1.0]
    assert auc_interval([(t, b, good) for t, _, b, good in points]) == [0.0, 0.0]
    paired = paired_auc_difference(points)
    assert paired == {"nodes": 6, "difference": 1.0, "ci95": [1.0, 1.0]}
    same = paired_auc_difference([(t, a, a, good) for t, a, _, good in points])
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]
    assert paired_auc_difference([]) is None


def test_value_and_self_eval_quality_with_intervals_keeps_the_figures_and_adds_the_paired_difference():
    trees = round_trees(0) + round_trees(1)  # four trees; a1, b1 good, a2 bad, b3 without an outcome
    scores = {(t, n.node_id): VALUE_SCORE[n.text] for t, tree in enumerate(trees) for n in tree.nodes
              if n.depth >= 1 and not n.terminal}
    plain = value_and_self_eval_quality(trees, scores)
    with_intervals = value_and_self_eval_quality(trees, scores, intervals=True)
    for source in ("value_model", "self_eval"):
        assert {k: v for k, v in with_intervals[source].items() if k != "auc_ci95"} == plain[source]
    # value model: a1 0.6, b1 0.2 (good) above a2 -0.6 (bad): AUC 1 in every resample that has both
    assert plain["value_model"]["auc"] == 1.0 and with_intervals["value_model"]["auc_ci95"] == [1.0, 1.0]
    # self-evaluation P(yes): a1 0.8 above a2 0.6, b1 0.3 below it: AUC 0.5
    assert plain["self_eval"]["auc"] == 0.5
    low, high = with_intervals["self_eval"]["auc_ci95"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    difference = with_intervals["value_minus_self_eval"]
    assert difference["nodes"] == 6 and difference["difference"] == 0.5
    assert difference["ci95"][0] <= 0.5 <= difference["ci95"][1]
