"""Write search trees as one self-contained, offline HTML viewer page.

The page is `viewer_template.html` (inline CSS and vanilla JS, no CDN, no server) with
the trees embedded as JSON in a `<script type="application/json" id="mcts-data">` tag.
It shows a collapsible tree, colours nodes by Q or by verdict, shows the full step and
every value of a clicked (or hovered) node in the side panel `#detail`, highlights the
best path (`Tree.best_path()`) and the preference pairs of `view_pairs.view_pairs`, and
has a problem selector when the page holds several trees.

    from mcts_po.graphs.html_viewer import write_viewer
    write_viewer(trees, "run.html", title="gsm8k run")     # then open run.html in a browser

Embedding: the JSON is written with `<`, `>`, `&`, U+2028 and U+2029 as \\uXXXX escapes,
so no step text (e.g. one containing `</script>`) can end the script element early;
non-finite floats become null. Node rows are stored column-wise (`node_fields` once,
one array per node) to keep large runs small.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from mcts_po.graphs.run_stats import subtree_outcomes
from mcts_po.graphs.view_pairs import PAIR_RULES, resolve_pair_source, view_pairs
from mcts_po.io_utils import atomic_write_text
from mcts_po.search.tree import Node, Tree

TEMPLATE_PATH = Path(__file__).with_name("viewer_template.html")
NODE_FIELDS = [f.name for f in dataclasses.fields(Node) if f.name != "node_id"]
META_FIELDS = ("sampling", "search_config", "timings", "token_counts", "extra", "prompt", "schema_version")
_PLACEHOLDERS = re.compile(r"__MCTS_PO_(TITLE|DATA_JSON)__")
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _finite(value: Any) -> Any:
    """Replace NaN/inf (which JSON.parse rejects) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def tree_view_data(tree: Tree, pair_source: str = "auto") -> dict[str, Any]:
    """The JSON the page reads for one tree."""
    pairs, _ = view_pairs(tree, pair_source)
    outcomes = subtree_outcomes(tree)
    return _finite({
        "tree_id": tree.tree_id,
        "problem_id": tree.problem_id,
        "question": tree.question,
        "gold_answer": tree.gold_answer,
        "task": tree.task,
        "model": tree.model,
        "backend": tree.backend,
        "tree_kind": tree.tree_kind,
        "seed": tree.seed,
        "solved": tree.has_correct_terminal(),
        "meta": {name: getattr(tree, name) for name in META_FIELDS},
        "nodes": [[getattr(node, name) for name in NODE_FIELDS] for node in tree.nodes],
        "best_path": [node.node_id for node in tree.best_path()],
        "pairs": [[p.parent, p.chosen, p.rejected] for p in pairs],
        "outcome": [None if outcomes[n.node_id] is None else int(outcomes[n.node_id]) for n in tree.nodes],
    })


def script_safe_json(data: Any) -> str:
    """JSON that can sit inside a <script> element: no `</script>`, `<!--` or line separators."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group(0)], text)


def render_viewer_html(trees: list[Tree], title: str = "mcts_po trees", pair_source: str = "auto") -> str:
    """The whole page as a string; pairs from `pair_source` ("auto", "extract", "siblings")."""
    pair_source = resolve_pair_source(pair_source)
    data = {
        "format": "mcts_po.viewer/1",
        "title": title,
        "node_fields": NODE_FIELDS,
        "pair_source": pair_source,
        "pair_rule": PAIR_RULES[pair_source],
        "trees": [tree_view_data(tree, pair_source) for tree in trees],
    }
    values = {"TITLE": html.escape(title), "DATA_JSON": script_safe_json(data)}
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    return _PLACEHOLDERS.sub(lambda m: values[m.group(1)], template)


def write_viewer(trees: list[Tree], path: str | os.PathLike, title: str = "mcts_po trees",
                 pair_source: str = "auto") -> Path:
    """Write the page for `trees` to `path` (atomically). Returns the path."""
    path = Path(path)
    atomic_write_text(path, render_viewer_html(trees, title, pair_source))
    return path
