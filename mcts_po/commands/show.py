"""`mcts-po show`: a saved tree as text, and the statistics of a run.

    mcts-po show runs/gsm8k-smoke                       # problem list + run statistics
    mcts-po show runs/gsm8k-smoke --problem gsm8k-test-3 --max-depth 4 --width 140
    mcts-po show runs/gsm8k-smoke --json                # statistics as JSON
    mcts-po show runs/gsm8k-smoke --plot calibration.png

RUN is a run directory (its `trees.jsonl` is read) or a `.jsonl` file of trees. With
one tree selected (a one-tree run, or `--problem`) the tree is printed; otherwise a
table of the problems. The statistics (depth and branching histograms, solved share,
best-path correct share, tokens per problem, self-evaluation calibration) are defined
in `mcts_po/graphs/run_stats.py`; `--plot PATH` saves the calibration plot as a PNG.
"""

from __future__ import annotations

import argparse
import json
import shutil

from mcts_po.io_utils import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN", help="run directory (with trees.jsonl) or a .jsonl file of trees")
    parser.add_argument("--problem", metavar="ID", help="show only this problem's tree (problem_id or tree_id)")
    parser.add_argument("--max-depth", type=int, metavar="D", help="print tree nodes down to this depth")
    parser.add_argument("--width", type=int, metavar="W", help="line width (default: the terminal's, else 100)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON instead of text")
    parser.add_argument("--plot", metavar="PATH", help="save the self-evaluation calibration plot (PNG) here")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins over [0, 1] (default 10)")
    parser.add_argument("--calibration-outcome", choices=("subtree", "rollout"), default="subtree",
                        help="a node's outcome: a correct terminal in its subtree (default) or its rollout value")
    parser.add_argument("--no-tree", action="store_true", help="print only the statistics")
    parser.add_argument("--pairs", choices=("auto", "extract", "siblings"), default="auto",
                        help="which preference pairs to mark: extract (mcts_po.extract's step-dpo pairs, default "
                             "config), siblings (highest vs lowest Q child), auto (extract when available)")


def problem_table(trees: list, width: int) -> str:
    from mcts_po.graphs.text_view import one_line, verdict_mark

    lines = [f"{'problem':<24} {'nodes':>6} {'depth':>5} {'solved':>6}  best-path answer"]
    for tree in trees:
        path = tree.best_path()
        end = path[-1] if path else tree.root
        shown = one_line(end.answer, 20) if end.answer is not None else "(no answer)"
        answer = f"{shown} {verdict_mark(end)}" if end.terminal else "(not terminal)"
        depth = max(n.depth for n in tree.nodes)
        solved = "✓" if tree.has_correct_terminal() else "✗"
        lines.append(f"{one_line(tree.problem_id, 24):<24} {len(tree):>6} {depth:>5} {solved:>6}  {answer}"[:width])
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from mcts_po.graphs.run_stats import compute_run_stats, format_run_stats, plot_calibration
    from mcts_po.graphs.text_view import render_tree_text
    from mcts_po.graphs.tree_files import select_trees
    from mcts_po.tree_io import read_trees

    if args.bins < 1:
        raise UserError(f"--bins must be at least 1, got {args.bins}")
    if args.max_depth is not None and args.max_depth < 0:
        raise UserError(f"--max-depth must be >= 0, got {args.max_depth}")
    width = args.width or shutil.get_terminal_size((100, 24)).columns
    trees = select_trees(read_trees(args.source, require_trees=True), args.problem, args.source)
    stats = compute_run_stats(trees, calibration_bins=args.bins, calibration_outcome=args.calibration_outcome,
                              pair_source=args.pairs)
    if args.plot:
        plot_calibration(stats.calibration, args.plot, title=f"Self-evaluation calibration: {args.source}")
    if args.json:
        print(json.dumps(stats.to_json_dict(), indent=2, ensure_ascii=False))
        return 0
    if not args.no_tree:
        if len(trees) == 1:
            print(render_tree_text(trees[0], max_depth=args.max_depth, width=width, pair_source=args.pairs))
        else:
            print(problem_table(trees, width))
            print("(pass --problem ID to print one tree)\n")
    print(format_run_stats(stats), end="")
    if args.plot:
        print(f"calibration plot: {args.plot}")
    return 0
