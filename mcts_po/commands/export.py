"""`mcts-po export`: saved trees as GraphML, node-link JSON, nested tree JSON or an HTML viewer.

    mcts-po export runs/gsm8k-smoke --format graphml --out out/graphml     # one .graphml per tree
    mcts-po export runs/gsm8k-smoke --format json --out out/json           # node-link JSON per tree
    mcts-po export runs/gsm8k-smoke --format tree-json --out out/tree      # nested JSON per tree
    mcts-po export runs/gsm8k-smoke --format html --out out/html           # one page, problem selector
    mcts-po export runs/gsm8k-smoke --format html --per-tree --out out/html

RUN is a run directory (its `trees.jsonl`) or a `.jsonl` file of trees; `--problem ID`
exports one problem. File names are the tree ids with characters other than letters,
digits, `.`, `_` and `-` replaced by `_`. The formats are described in
`mcts_po/graphs/networkx_export.py` and `docs/graphs.md`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

FORMATS = ("graphml", "json", "tree-json", "html")
SUFFIXES = {"graphml": ".graphml", "json": ".json", "tree-json": ".tree.json", "html": ".html"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN", help="run directory (with trees.jsonl) or a .jsonl file of trees")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="graphml | json (node-link) | tree-json (nested) | html (offline viewer)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    parser.add_argument("--problem", metavar="ID", help="export only this problem's tree")
    parser.add_argument("--per-tree", action="store_true", help="html: one page per tree instead of one per run")
    parser.add_argument("--title", help="html: page title (default: the run's name)")
    parser.add_argument("--pairs", choices=("auto", "extract", "siblings"), default="auto",
                        help="html: which preference pairs to mark: extract (mcts_po.extract's step-dpo pairs, default "
                             "config), siblings (highest vs lowest Q child), auto (extract when available)")


def file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tree"


def unique_stems(names: list[str]) -> list[str]:
    """Safe file stems, made unique by appending -2, -3, ... to repeats."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem = file_stem(name)
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def run_name(source: str) -> str:
    path = Path(source)
    return path.name if path.is_dir() else (path.parent.name if path.name == "trees.jsonl" else path.stem)


def run(args: argparse.Namespace) -> int:
    from mcts_po.graphs.html_viewer import write_viewer
    from mcts_po.graphs.networkx_export import to_node_link_json, to_tree_json, write_graphml
    from mcts_po.graphs.tree_files import select_trees
    from mcts_po.tree_io import read_trees
    from mcts_po.io_utils import atomic_write_json

    trees = select_trees(read_trees(args.source, require_trees=True), args.problem, args.source)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(args.source)
    written: list[Path] = []
    if args.format == "html" and not args.per_tree:
        stem = file_stem(name if args.problem is None else f"{name}-{args.problem}")
        written.append(write_viewer(trees, out_dir / f"{stem}.html", title=args.title or f"mcts_po: {name}",
                                    pair_source=args.pairs))
    else:
        for tree, stem in zip(trees, unique_stems([t.tree_id for t in trees])):
            path = out_dir / f"{stem}{SUFFIXES[args.format]}"
            if args.format == "graphml":
                write_graphml(tree, path)
            elif args.format == "json":
                atomic_write_json(path, to_node_link_json(tree))
            elif args.format == "tree-json":
                atomic_write_json(path, to_tree_json(tree))
            else:
                write_viewer([tree], path, title=args.title or f"mcts_po: {tree.problem_id}", pair_source=args.pairs)
            written.append(path)
    print(f"wrote {len(written)} {args.format} file{'s' if len(written) != 1 else ''} to {out_dir}")
    for path in written[:5]:
        print(f"  {path}")
    if len(written) > 5:
        print(f"  ... and {len(written) - 5} more")
    return 0
