"""Choosing among loaded search trees (one problem's trees), and a run's summary.

`mcts-po show` and `mcts-po export` accept either a run directory written by
`mcts-po search --out RUN` (its trees live in `RUN/trees.jsonl`) or a `.jsonl` file
with one tree per line; `mcts_po.tree_io.read_trees` reads them (a line that is not a valid
tree raises `InputError` naming the file and the line) and `select_trees` picks a problem's.

    from mcts_po.tree_io import read_trees
    from mcts_po.graphs.tree_files import select_trees
    trees = read_trees("runs/gsm8k-smoke", require_trees=True)   # or "runs/gsm8k-smoke/trees.jsonl"
    trees = select_trees(trees, problem_id="gsm8k-test-3", source="runs/gsm8k-smoke")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mcts_po.io_utils import InputError
from mcts_po.search.tree import Tree

SUMMARY_FILE_NAME = "summary.json"


def load_run_summary(source: str | os.PathLike) -> dict[str, Any] | None:
    """`RUN/summary.json` when `source` is a run directory that has one, else None."""
    source = Path(source)
    path = source / SUMMARY_FILE_NAME if source.is_dir() else source.parent / SUMMARY_FILE_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"invalid JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def select_trees(trees: list[Tree], problem_id: str | None, source: str | os.PathLike = "") -> list[Tree]:
    """The trees of one problem (matched on problem_id, then tree_id), or all when None."""
    if problem_id is None:
        return trees
    chosen = [t for t in trees if t.problem_id == problem_id] or [t for t in trees if t.tree_id == problem_id]
    if not chosen:
        known = ", ".join(t.problem_id for t in trees[:10]) + (" ..." if len(trees) > 10 else "")
        raise InputError(source, None, f"no tree for problem {problem_id!r}; problems here: {known}")
    return chosen
