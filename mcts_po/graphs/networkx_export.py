"""Search trees as networkx graphs, and their GraphML, node-link JSON and nested JSON files.

    from mcts_po.graphs.networkx_export import to_networkx, write_graphml, read_graphml_tree
    G = to_networkx(tree)                # nx.DiGraph, node key = node_id, edges parent -> child
    write_graphml(tree, "tree.graphml")  # opens in Gephi, yEd, Cytoscape
    assert read_graphml_tree("tree.graphml").to_dict() == tree.to_dict()

The graph (`to_networkx`):
- one node per tree node, keyed by `node_id`, carrying every `Node` field except
  `node_id` (the key) and `children` (the out-edges, in order); `parent` is kept;
- one edge parent -> child per link, with `child_index` = the child's position in its
  parent's `children` list;
- `G.graph` holds the tree metadata: every `Tree` field except `nodes`.

GraphML accepts only str/int/float/bool values, so `write_graphml` writes:
- `None` as a missing `<data>` element (GraphML's "no value"); `read_graphml_*` turns
  a missing value of an optional field (self_eval, rollout_value, rollout_text,
  initial_value, answer, correct) back into `None`;
- dict fields of the tree (sampling, search_config, timings, token_counts, extra) as
  JSON strings, decoded again on read because the field is known to be a dict;
- a string that XML 1.0 cannot carry unchanged (control characters other than tab and
  newline, a carriage return, lone surrogates) as a JSON string literal, and lists the
  field in the node's (or graph's) `json_encoded_fields` attribute (comma separated);
- floats with Python's shortest round-trip repr, so values come back bit-exact.

Node-link JSON is `nx.node_link_data(G, edges="edges")` of the same graph. Tree JSON is
`{"format": ..., "graph": <metadata>, "root": json_graph.tree_data(G, 0)}`: nested
`children` lists, the shape d3.hierarchy reads. All three formats round-trip to an equal
`Tree` (`from_node_link_json`, `from_tree_json`, `read_graphml_tree`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import networkx as nx
from networkx.readwrite import json_graph

from mcts_po.io_utils import InputError
from mcts_po.search.tree import ROOT_INDEX, Node, Tree

TREE_JSON_FORMAT = "mcts_po.tree-json/1"
JSON_ENCODED_FIELDS_ATTR = "json_encoded_fields"
CHILD_INDEX_ATTR = "child_index"
# Node fields that are not node attributes: the node key and the out-edges.
STRUCTURAL_NODE_FIELDS = ("node_id", "children")
# networkx's GraphML reader adds these to G.graph.
_GRAPHML_READER_KEYS = ("node_default", "edge_default")
# Characters XML 1.0 cannot carry unchanged: C0 controls except \t and \n, \r (parsers
# turn it into \n), surrogates and the two non-characters.
_XML_UNSAFE = re.compile("[\x00-\x08\x0b-\x0d\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass(frozen=True)
class FieldType:
    """The declared type of a dataclass field, reduced to what GraphML needs."""

    base: str  # "int", "float", "str", "bool", "dict", "list"
    optional: bool


def _field_types(cls: type) -> dict[str, FieldType]:
    out = {}
    for f in dataclasses.fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        parts = [p.strip() for p in annotation.split("|")]
        base = parts[0].split("[")[0]
        out[f.name] = FieldType(base=base, optional="None" in parts)
    return out


NODE_FIELD_TYPES = {k: v for k, v in _field_types(Node).items() if k not in STRUCTURAL_NODE_FIELDS}
TREE_FIELD_TYPES = {k: v for k, v in _field_types(Tree).items() if k != "nodes"}


# ---------------------------------------------------------------------------- networkx
def to_networkx(tree: Tree) -> nx.DiGraph:
    """The tree as a DiGraph: node attributes = Node fields, G.graph = Tree metadata."""
    graph = nx.DiGraph()
    for name in TREE_FIELD_TYPES:
        graph.graph[name] = copy.deepcopy(getattr(tree, name))
    for node in tree.nodes:
        graph.add_node(node.node_id, **{name: getattr(node, name) for name in NODE_FIELD_TYPES})
    for node in tree.nodes:
        for index, child in enumerate(node.children):
            graph.add_edge(node.node_id, child, **{CHILD_INDEX_ATTR: index})
    return graph


def graph_to_tree(graph: nx.DiGraph) -> Tree:
    """Rebuild a Tree from a graph shaped like `to_networkx`'s output. Raises ValueError."""
    node_ids = sorted(graph.nodes)
    if node_ids != list(range(len(node_ids))):
        raise ValueError(f"node ids must be 0..{len(node_ids) - 1}, got {node_ids[:5]}...")
    raw_nodes = []
    for node_id in node_ids:
        attrs = graph.nodes[node_id]
        raw = {"node_id": node_id}
        for name, field_type in NODE_FIELD_TYPES.items():
            if name in attrs:
                raw[name] = attrs[name]
            elif field_type.optional:
                raw[name] = None
        out_edges = list(graph.out_edges(node_id, data=True))
        if all(CHILD_INDEX_ATTR in data for _, _, data in out_edges):
            out_edges.sort(key=lambda edge: edge[2][CHILD_INDEX_ATTR])
        raw["children"] = [child for _, child, _ in out_edges]
        parents = list(graph.predecessors(node_id))
        if len(parents) > 1:
            raise ValueError(f"node {node_id} has {len(parents)} parents")
        if "parent" not in raw:
            raw["parent"] = parents[0] if parents else -1
        raw_nodes.append(raw)
    data = {name: copy.deepcopy(graph.graph[name]) for name in TREE_FIELD_TYPES if name in graph.graph}
    data["nodes"] = raw_nodes
    return Tree.from_dict(data)


# ---------------------------------------------------------------------------- GraphML
def _needs_json_escape(value: str) -> bool:
    return bool(_XML_UNSAFE.search(value))


def _graphml_value(value: Any, field_type: FieldType | None) -> tuple[Any, bool]:
    """(GraphML-safe value, whether it was JSON-encoded as an escaped string)."""
    base = field_type.base if field_type else type(value).__name__
    if base in ("dict", "list") or isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, allow_nan=True), False
    if base == "bool" or isinstance(value, bool):
        return bool(value), False
    if base == "float":
        return float(value), False
    if base == "int":
        return int(value), False
    if isinstance(value, str):
        if _needs_json_escape(value):
            return json.dumps(value, ensure_ascii=True), True
        return value, False
    if isinstance(value, (int, float)):
        return value, False
    return str(value), False


def _graphml_attrs(attrs: dict[str, Any], types: dict[str, FieldType]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    escaped = []
    for name, value in attrs.items():
        if value is None:
            continue  # GraphML has no null: a missing <data> element means None
        safe, was_escaped = _graphml_value(value, types.get(name))
        out[name] = safe
        if was_escaped:
            escaped.append(name)
    if escaped:
        out[JSON_ENCODED_FIELDS_ATTR] = ",".join(escaped)
    return out


def to_graphml_graph(tree: Tree) -> nx.DiGraph:
    """`to_networkx(tree)` with every attribute made GraphML-safe (see the module doc)."""
    graph = to_networkx(tree)
    safe = nx.DiGraph()
    safe.graph.update(_graphml_attrs(graph.graph, TREE_FIELD_TYPES))
    for node_id, attrs in graph.nodes(data=True):
        safe.add_node(node_id, **_graphml_attrs(attrs, NODE_FIELD_TYPES))
    safe.add_edges_from(graph.edges(data=True))
    return safe


def write_graphml(tree: Tree, path: str | os.PathLike) -> Path:
    """Write the tree as GraphML (UTF-8). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    nx.write_graphml(to_graphml_graph(tree), tmp, encoding="utf-8", prettyprint=True)
    os.replace(tmp, path)
    return path


def _decode_attrs(attrs: dict[str, Any], types: dict[str, FieldType]) -> dict[str, Any]:
    escaped = set(filter(None, str(attrs.get(JSON_ENCODED_FIELDS_ATTR, "")).split(",")))
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name == JSON_ENCODED_FIELDS_ATTR or name in _GRAPHML_READER_KEYS:
            continue
        field_type = types.get(name)
        if name in escaped or (field_type and field_type.base in ("dict", "list") and isinstance(value, str)):
            value = json.loads(value)
        elif field_type and field_type.base == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[name] = value
    for name, field_type in types.items():
        if name not in out and field_type.optional:
            out[name] = None
    return out


def read_graphml_graph(path: str | os.PathLike) -> nx.DiGraph:
    """Read a GraphML file written by `write_graphml` into a graph like `to_networkx`'s."""
    path = Path(path)
    try:
        raw = nx.read_graphml(path, node_type=int)
    except ElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise InputError(path, line, f"not valid GraphML XML: {exc}") from None
    except (FileNotFoundError, nx.NetworkXError, ValueError) as exc:
        raise InputError(path, None, f"cannot read GraphML: {exc}") from None
    graph = nx.DiGraph()
    graph.graph.update(_decode_attrs(dict(raw.graph), TREE_FIELD_TYPES))
    for node_id, attrs in raw.nodes(data=True):
        graph.add_node(node_id, **_decode_attrs(dict(attrs), NODE_FIELD_TYPES))
    graph.add_edges_from(raw.edges(data=True))
    return graph


def read_graphml_tree(path: str | os.PathLike) -> Tree:
    """Read a GraphML file written by `write_graphml` back into an equal Tree."""
    graph = read_graphml_graph(path)
    try:
        return graph_to_tree(graph)
    except (ValueError, TypeError) as exc:
        raise InputError(path, None, f"not an mcts_po tree: {exc}") from None


# ---------------------------------------------------------------------------- JSON
def to_node_link_json(tree: Tree) -> dict[str, Any]:
    """`nx.node_link_data(to_networkx(tree), edges="edges")`: plain JSON-ready dicts."""
    return json_graph.node_link_data(to_networkx(tree), edges="edges")


def from_node_link_json(data: dict[str, Any]) -> Tree:
    """Inverse of `to_node_link_json`. Raises ValueError on a graph that is not a tree."""
    graph = json_graph.node_link_graph(data, directed=True, multigraph=False, edges="edges")
    return graph_to_tree(graph)


def to_tree_json(tree: Tree) -> dict[str, Any]:
    """Nested JSON: `{"format", "graph": metadata, "root": {id, ..., children: [...]}}`."""
    graph = to_networkx(tree)
    return {
        "format": TREE_JSON_FORMAT,
        "graph": dict(graph.graph),
        "root": json_graph.tree_data(graph, ROOT_INDEX, ident="id", children="children"),
    }


def from_tree_json(data: dict[str, Any]) -> Tree:
    """Inverse of `to_tree_json` (children keep their order). Raises ValueError."""
    if not isinstance(data, dict) or data.get("format") != TREE_JSON_FORMAT:
        raise ValueError(f"not an mcts_po tree JSON (expected format {TREE_JSON_FORMAT!r})")
    graph = json_graph.tree_graph(data["root"], ident="id", children="children")
    graph.graph.update(data.get("graph", {}))
    return graph_to_tree(graph)
