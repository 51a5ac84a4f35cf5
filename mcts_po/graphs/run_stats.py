"""Statistics of a run's search trees, and calibration of self-evaluation (`mcts-po show`).

    from mcts_po.graphs.run_stats import compute_run_stats, format_run_stats, plot_calibration
    stats = compute_run_stats(trees, calibration_bins=10)
    print(format_run_stats(stats))
    plot_calibration(stats.calibration, "calibration.png")

What is counted:
- `node_depth_histogram`: nodes per depth, over all trees (the root is depth 0);
  `tree_depth_histogram`: trees per maximum node depth;
  `branching_histogram`: expanded nodes (at least one child) per number of children.
- `solved_share`: trees that hold at least one terminal the verifier marked correct.
- `best_path_correct_share`: trees whose `Tree.best_path()` (most visits, then Q) ends
  at a terminal marked correct — what a greedy read-out of the search would answer.
- `tokens_per_problem`: per problem id, the sum of `num_tokens` over the tree's nodes
  (the generated step tokens kept in the tree; rollout and self-evaluation tokens are
  in `Tree.token_counts`, whose per-key means are in `token_counts_mean`).
- calibration: a node takes part when it has a `self_eval` score and an outcome. With
  `outcome="subtree"` (the default) a node's outcome is 1 when a terminal marked
  correct exists in its subtree (itself included), 0 when its subtree holds verified
  terminals and none is correct, and undefined (node left out) when nothing below it
  was verified. With `outcome="rollout"` the outcome is `rollout_value > 0`, or the
  node's own verdict for a verified terminal without a rollout. Scores are put in
  `bins` equal-width bins over [0, 1]; each bin reports its count, mean score and
  empirical accuracy. `ece` is the count-weighted mean |accuracy - mean score|;
  `brier` the mean squared error of the score against the outcome; `auc` the chance that
  a node with outcome 1 scores higher than one with outcome 0 (ties count half; 0.5 is
  an uninformative score, None when either outcome is missing).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from mcts_po.graphs.view_pairs import resolve_pair_source, view_pairs
from mcts_po.search.tree import Tree

CALIBRATION_OUTCOMES = ("subtree", "rollout")


@dataclass
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_score: float | None  # mean self_eval of the bin's nodes
    accuracy: float | None  # share of the bin's nodes whose outcome is 1


@dataclass
class Calibration:
    outcome: str  # "subtree" or "rollout" (see the module doc)
    num_points: int
    bins: list[CalibrationBin]
    ece: float | None
    brier: float | None
    auc: float | None = None


@dataclass
class SummaryNumbers:
    mean: float
    median: float
    min: float
    max: float


@dataclass
class RunStats:
    num_trees: int
    num_nodes: int
    nodes_per_tree: SummaryNumbers
    node_depth_histogram: dict[int, int]
    tree_depth_histogram: dict[int, int]
    branching_histogram: dict[int, int]
    terminal_verdicts: dict[str, int]  # correct / wrong / unverified terminal nodes
    terminal_reasons: dict[str, int]
    solved_share: float
    best_path_correct_share: float
    num_pairs: int  # preference pairs highlighted by the viewer (see view_pairs)
    pair_source: str  # "extract" or "siblings"
    tokens_per_problem: dict[str, int]
    tokens_per_problem_summary: SummaryNumbers
    token_counts_mean: dict[str, float]
    calibration: Calibration
    extra: dict[str, Any] = field(default_factory=dict)
    nodes_by_kind: dict[str, int] = field(default_factory=dict)  # root / plan / step (plan trees: both levels)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("node_depth_histogram", "tree_depth_histogram", "branching_histogram"):
            data[key] = {str(k): v for k, v in sorted(data[key].items())}
        return data


def _summary(values: list[float]) -> SummaryNumbers:
    if not values:
        return SummaryNumbers(0.0, 0.0, 0.0, 0.0)
    return SummaryNumbers(float(statistics.fmean(values)), float(statistics.median(values)),
                          float(min(values)), float(max(values)))


def _postorder(tree: Tree) -> list[int]:
    order, stack = [], [(tree.root.node_id, False)]
    while stack:
        node_id, done = stack.pop()
        if done:
            order.append(node_id)
            continue
        stack.append((node_id, True))
        stack.extend((child, False) for child in tree.nodes[node_id].children)
    return order


def subtree_outcomes(tree: Tree) -> dict[int, bool | None]:
    """node id -> True (a correct terminal in its subtree), False (verified terminals,
    none correct) or None (no verified terminal in its subtree)."""
    outcome: dict[int, bool | None] = {}
    for node_id in _postorder(tree):
        node = tree.nodes[node_id]
        own = node.correct if node.terminal else None
        below = [outcome[c] for c in node.children] + [own]
        if any(v is True for v in below):
            outcome[node_id] = True
        elif any(v is False for v in below):
            outcome[node_id] = False
        else:
            outcome[node_id] = None
    return outcome


def rollout_outcomes(tree: Tree) -> dict[int, bool | None]:
    """node id -> rollout_value > 0, else the verdict of a verified terminal, else None."""
    out: dict[int, bool | None] = {}
    for node in tree.nodes:
        if node.rollout_value is not None:
            out[node.node_id] = node.rollout_value > 0
        elif node.terminal and node.correct is not None:
            out[node.node_id] = bool(node.correct)
        else:
            out[node.node_id] = None
    return out


def calibration_points(trees: list[Tree], outcome: str = "subtree") -> list[tuple[float, bool]]:
    """(self_eval, outcome) for every node that has both."""
    if outcome not in CALIBRATION_OUTCOMES:
        raise ValueError(f"unknown calibration outcome {outcome!r}; choose one of {CALIBRATION_OUTCOMES}")
    points = []
    for tree in trees:
        outcomes = subtree_outcomes(tree) if outcome == "subtree" else rollout_outcomes(tree)
        for node in tree.nodes:
            result = outcomes[node.node_id]
            if node.self_eval is not None and result is not None:
                points.append((float(node.self_eval), bool(result)))
    return points


def ranking_auc(points: list[tuple[float, bool]]) -> float | None:
    """P(score of a random outcome-1 node > score of a random outcome-0 node), ties half."""
    ranked = sorted(points, key=lambda point: point[0])
    positives = sum(1 for _, result in ranked if result)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return None
    wins = 0.0
    negatives_below = 0
    index = 0
    while index < len(ranked):  # one group of equal scores at a time
        end = index
        while end < len(ranked) and ranked[end][0] == ranked[index][0]:
            end += 1
        group_positives = sum(1 for _, result in ranked[index:end] if result)
        group_negatives = (end - index) - group_positives
        wins += group_positives * (negatives_below + 0.5 * group_negatives)
        negatives_below += group_negatives
        index = end
    return wins / (positives * negatives)


def calibration_table(points: list[tuple[float, bool]], bins: int = 10, outcome: str = "subtree") -> Calibration:
    """Equal-width bins over [0, 1] (a score of exactly 1 goes to the last bin)."""
    if bins < 1:
        raise ValueError(f"calibration bins must be >= 1, got {bins}")
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for score, result in points:
        clamped = min(max(score, 0.0), 1.0)
        members[min(int(clamped * bins), bins - 1)].append((score, result))
    table = []
    for index, bucket in enumerate(members):
        mean_score = statistics.fmean(s for s, _ in bucket) if bucket else None
        accuracy = sum(r for _, r in bucket) / len(bucket) if bucket else None
        table.append(CalibrationBin(index / bins, (index + 1) / bins, len(bucket), mean_score, accuracy))
    total = len(points)
    ece = (sum(b.count / total * abs(b.accuracy - b.mean_score) for b in table if b.count)
           if total else None)
    brier = statistics.fmean((s - float(r)) ** 2 for s, r in points) if total else None
    return Calibration(outcome, total, table, ece, brier, ranking_auc(points))


def compute_run_stats(trees: list[Tree], calibration_bins: int = 10, calibration_outcome: str = "subtree",
                      pair_source: str = "auto") -> RunStats:
    pair_source = resolve_pair_source(pair_source)
    node_depths: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    tree_depths: Counter[int] = Counter()
    branching: Counter[int] = Counter()
    verdicts: Counter[str] = Counter({"correct": 0, "wrong": 0, "unverified": 0})
    reasons: Counter[str] = Counter()
    tokens_per_problem: dict[str, int] = {}
    token_count_values: dict[str, list[float]] = {}
    solved = best_correct = num_pairs = 0
    for tree in trees:
        node_depths.update(n.depth for n in tree.nodes)
        kinds.update(n.kind for n in tree.nodes)
        tree_depths[max(n.depth for n in tree.nodes)] += 1
        branching.update(len(n.children) for n in tree.nodes if n.children)
        for node in tree.terminals():
            verdicts["correct" if node.correct is True else "wrong" if node.correct is False else "unverified"] += 1
            reasons[node.terminal_reason or "(none)"] += 1
        solved += tree.has_correct_terminal()
        path = tree.best_path()
        best_correct += bool(path and path[-1].terminal and path[-1].correct is True)
        num_pairs += len(view_pairs(tree, pair_source)[0])
        tokens_per_problem[tree.problem_id] = tokens_per_problem.get(tree.problem_id, 0) + sum(
            n.num_tokens for n in tree.nodes)
        for key, value in tree.token_counts.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                token_count_values.setdefault(key, []).append(float(value))
    num_trees = len(trees)
    points = calibration_points(trees, calibration_outcome)
    return RunStats(
        num_trees=num_trees,
        num_nodes=sum(len(t) for t in trees),
        nodes_per_tree=_summary([float(len(t)) for t in trees]),
        node_depth_histogram=dict(sorted(node_depths.items())),
        tree_depth_histogram=dict(sorted(tree_depths.items())),
        branching_histogram=dict(sorted(branching.items())),
        terminal_verdicts=dict(verdicts),
        terminal_reasons=dict(sorted(reasons.items())),
        solved_share=solved / num_trees if num_trees else 0.0,
        best_path_correct_share=best_correct / num_trees if num_trees else 0.0,
        num_pairs=num_pairs,
        pair_source=pair_source,
        tokens_per_problem=tokens_per_problem,
        tokens_per_problem_summary=_summary([float(v) for v in tokens_per_problem.values()]),
        token_counts_mean={k: statistics.fmean(v) for k, v in sorted(token_count_values.items())},
        calibration=calibration_table(points, calibration_bins, calibration_outcome),
        nodes_by_kind=dict(sorted(kinds.items())),
    )


def _histogram_lines(title: str, histogram: dict[Any, int], bar_width: int = 40) -> list[str]:
    lines = [title]
    if not histogram:
        return lines + ["  (empty)"]
    peak = max(histogram.values()) or 1
    label_width = max(len(str(k)) for k in histogram)
    for key, count in histogram.items():
        bar = "█" * max(1 if count else 0, round(count / peak * bar_width))
        lines.append(f"  {str(key).rjust(label_width)} | {str(count).rjust(6)} {bar}")
    return lines


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_calibration(calibration: Calibration) -> list[str]:
    lines = [f"calibration of self_eval against outcome={calibration.outcome} "
             f"({calibration.num_points} nodes; ECE {_fmt(calibration.ece)}, Brier {_fmt(calibration.brier)}, "
             f"AUC {_fmt(calibration.auc)})",
             "  bin           count  mean self_eval  accuracy"]
    for b in calibration.bins:
        lines.append(f"  [{b.low:.2f}, {b.high:.2f}{']' if b.high >= 1 else ')'}  {b.count:6d}  "
                     f"{_fmt(b.mean_score):>14}  {_fmt(b.accuracy):>8}")
    return lines


def format_run_stats(stats: RunStats) -> str:
    s = stats
    lines = [
        f"trees {s.num_trees}  nodes {s.num_nodes}  nodes/tree mean {s.nodes_per_tree.mean:.1f} "
        f"(min {s.nodes_per_tree.min:.0f}, max {s.nodes_per_tree.max:.0f})",
        f"solved share (a correct terminal in the tree): {s.solved_share:.3f}",
        f"best-path correct share (greedy read-out by visits, then Q): {s.best_path_correct_share:.3f}",
        "terminal nodes: " + ", ".join(f"{k} {v}" for k, v in s.terminal_verdicts.items())
        + "; reasons: " + (", ".join(f"{k} {v}" for k, v in s.terminal_reasons.items()) or "-"),
        "nodes by kind: " + (", ".join(f"{k} {v}" for k, v in s.nodes_by_kind.items()) or "-"),
        f"preference pairs ({s.pair_source}): {s.num_pairs}",
        f"step tokens per problem: mean {s.tokens_per_problem_summary.mean:.1f}, median "
        f"{s.tokens_per_problem_summary.median:.1f}, min {s.tokens_per_problem_summary.min:.0f}, "
        f"max {s.tokens_per_problem_summary.max:.0f}",
    ]
    if s.token_counts_mean:
        lines.append("token_counts (mean per tree): " + ", ".join(f"{k} {v:.1f}" for k, v in s.token_counts_mean.items()))
    lines += _histogram_lines("nodes per depth:", s.node_depth_histogram)
    lines += _histogram_lines("trees per max depth:", s.tree_depth_histogram)
    lines += _histogram_lines("expanded nodes per number of children:", s.branching_histogram)
    lines += format_calibration(s.calibration)
    return "\n".join(lines) + "\n"


def plot_calibration(calibration: Calibration, path: str, title: str = "Self-evaluation calibration") -> None:
    """Reliability diagram (accuracy per bin vs the diagonal) and bin counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(b.low + b.high) / 2 for b in calibration.bins]
    width = calibration.bins[0].high - calibration.bins[0].low if calibration.bins else 0.1
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), height_ratios=[3, 1], sharex=True)
    accuracies = [b.accuracy if b.accuracy is not None else 0.0 for b in calibration.bins]
    top.bar(centres, accuracies, width=width * 0.9, color="#4c9a5b", edgecolor="#2d5e37", label="accuracy")
    scored = [(b.mean_score, b.accuracy) for b in calibration.bins if b.count]
    if scored:
        top.plot([x for x, _ in scored], [y for _, y in scored], "o", color="#1f3c88", label="(mean score, accuracy)")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1.05)
    top.set_ylabel(f"share with outcome 1 ({calibration.outcome})")
    top.set_title(f"{title}\n{calibration.num_points} nodes, ECE {_fmt(calibration.ece)}, Brier {_fmt(calibration.brier)}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b.count for b in calibration.bins], width=width * 0.9, color="#888888")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("self_eval score")
    bottom.set_ylabel("nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
