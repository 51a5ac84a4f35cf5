"""Reading saved trees: run directories (their `trees.jsonl`) or `.jsonl` files of trees.

A line that is not JSON or not a valid tree raises `InputError` naming the file and line.
A progress bar (tqdm, on stderr) shows while reading when asked.

    from mcts_po.extract.reading import read_trees
    trees = read_trees(["runs/x", "more_trees.jsonl"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from mcts_po.io_utils import InputError, read_jsonl
from mcts_po.search.tree import Tree

TREES_FILE = "trees.jsonl"


def tree_file(path: str | os.PathLike) -> Path:
    """`path` itself for a file, `path/trees.jsonl` for a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / TREES_FILE
        if not candidate.is_file():
            raise InputError(path, None, f"a run directory needs a {TREES_FILE} file (none found)")
        return candidate
    if not path.exists():
        raise InputError(path, None, "no such run directory or trees file")
    return path


def read_tree_file(path: str | os.PathLike, progress=None) -> list[Tree]:
    trees = []
    for line_no, record in read_jsonl(path):
        try:
            trees.append(Tree.from_dict(record))
        except ValueError as exc:
            raise InputError(path, line_no, f"not a valid tree: {exc}") from None
        if progress is not None:
            progress.update(1)
    return trees


def read_trees(paths: Iterable[str | os.PathLike], show_progress: bool = False) -> list[Tree]:
    """All trees from the given run directories / JSONL files, in order."""
    files = [tree_file(p) for p in paths]
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(desc="reading trees", unit="tree")
    try:
        return [tree for f in files for tree in read_tree_file(f, progress)]
    finally:
        if progress is not None:
            progress.close()
