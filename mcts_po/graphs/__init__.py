"""Trees as graphs: networkx/GraphML/JSON export, a text view, run statistics, an offline HTML viewer.

    from mcts_po.tree_io import read_trees
    from mcts_po.graphs import to_networkx, write_graphml, write_viewer
    trees = read_trees("runs/gsm8k-smoke", require_trees=True)
    G = to_networkx(trees[0])
    write_viewer(trees, "run.html")

CLI: `mcts-po show RUN` and `mcts-po export RUN --format graphml|json|tree-json|html --out DIR`.
See docs/graphs.md. Imports neither torch nor matplotlib (the calibration plot imports
matplotlib when called).
"""

from mcts_po.graphs.html_viewer import render_viewer_html, write_viewer
from mcts_po.graphs.networkx_export import (
    from_node_link_json,
    from_tree_json,
    graph_to_tree,
    read_graphml_graph,
    read_graphml_tree,
    to_graphml_graph,
    to_networkx,
    to_node_link_json,
    to_tree_json,
    write_graphml,
)
from mcts_po.graphs.run_stats import compute_run_stats, format_run_stats, plot_calibration
from mcts_po.graphs.text_view import render_tree_text
from mcts_po.graphs.tree_files import select_trees
from mcts_po.graphs.view_pairs import SiblingPair, sibling_pairs, view_pairs

__all__ = [
    "SiblingPair", "compute_run_stats", "format_run_stats", "from_node_link_json", "from_tree_json",
    "graph_to_tree", "plot_calibration", "read_graphml_graph", "read_graphml_tree",
    "render_tree_text", "render_viewer_html", "select_trees", "sibling_pairs", "to_graphml_graph",
    "to_networkx", "to_node_link_json", "to_tree_json", "view_pairs", "write_graphml", "write_viewer",
]
