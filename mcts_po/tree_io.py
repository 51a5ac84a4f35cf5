"""Reading saved search trees: run directories (their `trees.jsonl`) or `.jsonl` files of trees.

The one reader behind `mcts-po extract`, `show`, `export`, the loop and the search runner's
resume. A line that is not JSON or not a valid tree raises `InputError` naming the file and
line; a progress bar (tqdm, on stderr) shows while reading when asked. Imports no torch.

    from mcts_po.tree_io import read_trees
    trees = read_trees(["runs/x", "more_trees.jsonl"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from mcts_po.io_utils import InputError, read_jsonl
from mcts_po.search.tree import Tree

TREES_FILE = "trees.jsonl"


def trees_path(source: str | os.PathLike) -> Path:
    """The `.jsonl` file of trees for `source`: the file itself, or `source/trees.jsonl` for a run directory."""
    source = Path(source)
    if source.is_dir():
        path = source / TREES_FILE
        if not path.is_file():
            raise InputError(source, None, f"not a run directory: it has no {TREES_FILE}")
        return path
    if not source.exists():
        raise InputError(source, None, "no such run directory or trees file")
    return source


def read_tree_file(path: str | os.PathLike, *, drop_torn_tail: bool = False, progress: Any = None) -> list[Tree]:
    """Every tree of one `.jsonl` file, in order. `drop_torn_tail` ignores a last line cut short by
    a kill (the search runner's resume); `progress` is a tqdm bar advanced once per tree."""
    trees: list[Tree] = []
    for line_no, record in read_jsonl(path, drop_torn_tail=drop_torn_tail):
        try:
            trees.append(Tree.from_dict(record))
        except (ValueError, TypeError) as exc:
            raise InputError(path, line_no, f"not a valid tree: {exc}") from None
        if progress is not None:
            progress.update(1)
    return trees


def read_trees(sources: str | os.PathLike | Iterable[str | os.PathLike], *, show_progress: bool = False,
               require_trees: bool = False) -> list[Tree]:
    """All trees from the given run directories / `.jsonl` files (one path or several), in order.
    With `require_trees`, a source that holds no tree is an error."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = [trees_path(source) for source in sources]
    from mcts_po.progress import progress_bar

    progress = progress_bar(show_progress, desc="reading trees", unit="tree")
    try:
        trees: list[Tree] = []
        for path in files:
            found = read_tree_file(path, progress=progress)
            if require_trees and not found:
                raise InputError(path, None, "holds no trees")
            trees.extend(found)
        return trees
    finally:
        progress.close()
