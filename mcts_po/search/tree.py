"""The search tree: nodes with insertion-ordered integer ids, and its JSON form.

This module is the one tree format every other part of mcts_po reads: the search
core writes it, extraction (`mcts_po.extract`), graphs (`mcts_po.graphs`) and the
viewer read it. It imports nothing heavier than the standard library.

A tree is a flat list of `Node`s; `nodes[i].node_id == i`; node 0 is the root
(`ROOT_INDEX`), whose parent is `NO_PARENT`. A node's `text` is one reasoning step
(or one plan step when `kind == "plan"`); the state of a node is the concatenation
of the steps on the path from the root. Values live in [-1, 1]: +1 a verified
correct answer, -1 a wrong one.

`Tree.to_json()` / `Tree.from_json()` round-trip exactly (floats are written with
`repr` precision by the json module). One tree per line in a `.jsonl` file.

Example:
    python -c "from mcts_po.search.tree import Tree; print(Tree.new(problem_id='p1', question='1+1?').to_json())"
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator

SCHEMA_VERSION = 1
ROOT_INDEX = 0
NO_PARENT = -1

NODE_KINDS = ("root", "plan", "step")

# Why a node is terminal. Empty string: not terminal.
TERMINAL_REASONS = ("", "answer", "eos", "max_depth", "max_tokens")


@dataclass
class Node:
    """One node of a search tree. Everything a user may ask "why?" about is here."""

    node_id: int
    parent: int = NO_PARENT
    children: list[int] = field(default_factory=list)
    kind: str = "step"  # one of NODE_KINDS
    depth: int = 0
    text: str = ""  # the step (or plan step) this node adds to its parent's state
    num_tokens: int = 0  # generated tokens in `text`
    logprob_sum: float = 0.0  # sum of the sampled tokens' log-probabilities
    prior: float = 1.0  # selection prior, normalised over siblings
    num_samples: int = 1  # identical sibling samples merged into this node
    visits: int = 0
    value_sum: float = 0.0
    q: float = 0.0  # current value estimate used by selection
    self_eval: float | None = None  # P("correct" verdict) from the policy, in [0, 1]
    rollout_value: float | None = None  # verifier outcome of a rollout, +1 / -1
    rollout_text: str | None = None
    initial_value: float | None = None  # the value this node was created with
    terminal: bool = False
    terminal_reason: str = ""  # one of TERMINAL_REASONS
    answer: str | None = None  # extracted final answer, terminal nodes
    correct: bool | None = None  # verifier verdict, terminal nodes with an answer
    wave: int = -1  # the search wave that created this node

    @property
    def is_root(self) -> bool:
        return self.parent == NO_PARENT

    @property
    def expanded(self) -> bool:
        return bool(self.children)


@dataclass
class Tree:
    """A search tree for one problem, with the metadata needed to reproduce it."""

    tree_id: str
    problem_id: str
    question: str
    gold_answer: str = ""
    task: str = ""
    model: str = ""
    backend: str = ""
    tree_kind: str = "step"  # "step" or "plan"
    prompt: str = ""  # the rendered prompt the root state starts from
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    search_config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    token_counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the reference-hint flag
    schema_version: int = SCHEMA_VERSION
    nodes: list[Node] = field(default_factory=list)

    # ------------------------------------------------------------------ build
    @classmethod
    def new(cls, *, problem_id: str, question: str, tree_id: str | None = None, **meta: Any) -> "Tree":
        tree = cls(tree_id=tree_id or problem_id, problem_id=problem_id, question=question, **meta)
        tree.nodes.append(Node(node_id=ROOT_INDEX, kind="root", depth=0))
        return tree

    def add_child(self, parent: int, **attrs: Any) -> Node:
        """Append a node under `parent`; ids are given in insertion order."""
        parent_node = self.nodes[parent]
        node = Node(node_id=len(self.nodes), parent=parent, depth=parent_node.depth + 1, **attrs)
        self.nodes.append(node)
        parent_node.children.append(node.node_id)
        return node

    # ------------------------------------------------------------------ read
    @property
    def root(self) -> Node:
        return self.nodes[ROOT_INDEX]

    def __len__(self) -> int:
        return len(self.nodes)

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the root's first child down to `node_id` (the root excluded)."""
        out: list[Node] = []
        node = self.nodes[node_id]
        while node.parent != NO_PARENT:
            out.append(node)
            node = self.nodes[node.parent]
        out.reverse()
        return out

    def steps(self, node_id: int) -> list[str]:
        """The step texts from the root to `node_id`."""
        return [n.text for n in self.path(node_id)]

    def children(self, node_id: int) -> list[Node]:
        return [self.nodes[c] for c in self.nodes[node_id].children]

    def leaves(self) -> Iterator[Node]:
        return (n for n in self.nodes if not n.children)

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal]

    def has_correct_terminal(self) -> bool:
        return any(n.terminal and n.correct for n in self.nodes)

    def best_path(self) -> list[Node]:
        """Greedy path by visits, then Q: the path a user calls "the search's answer"."""
        node = self.root
        out: list[Node] = []
        while node.children:
            node = max(self.children(node.node_id), key=lambda c: (c.visits, c.q))
            out.append(node)
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tree":
        if not isinstance(data, dict):
            raise ValueError(f"a tree must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", None)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported tree schema_version {version!r} (this mcts_po reads {SCHEMA_VERSION})")
        tree_fields = {f.name for f in dataclasses.fields(cls)}
        node_fields = {f.name for f in dataclasses.fields(Node)}
        unknown = set(data) - tree_fields
        if unknown:
            raise ValueError(f"unknown tree fields: {sorted(unknown)}")
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            raise ValueError("a tree needs a non-empty 'nodes' list")
        nodes = []
        for index, raw in enumerate(raw_nodes):
            if not isinstance(raw, dict):
                raise ValueError(f"node {index} is not an object")
            bad = set(raw) - node_fields
            if bad:
                raise ValueError(f"node {index} has unknown fields {sorted(bad)}")
            try:
                node = Node(**raw)
            except TypeError as exc:
                raise ValueError(f"node {index}: {exc}") from None
            _check_field_types(node, f"node {index}")
            if node.node_id != index:
                raise ValueError(f"node at position {index} has node_id {node.node_id}")
            nodes.append(node)
        _check_links(nodes)
        kwargs = {k: v for k, v in data.items() if k != "nodes"}
        try:
            tree = cls(**kwargs)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        _check_field_types(tree, "tree", skip=("nodes",))
        tree.nodes = nodes
        return tree

    @classmethod
    def from_json(cls, line: str) -> "Tree":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        return cls.from_dict(data)


def _value_matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-decoded value fits a field's annotation (ints count as floats; bools
    are not numbers; floats must be finite)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_value_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_value_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _value_matches(k, args[0]) and _value_matches(v, args[1]) for k, v in value.items())
    return True


def _check_field_types(obj: Any, what: str, skip: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field whose value has the wrong JSON type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if not _value_matches(value, hints[f.name]):
            shown = json.dumps(value, ensure_ascii=False, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"{what}: field {f.name!r} must be {_type_text(hints[f.name])}, got {shown}")


def _type_text(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_links(nodes: list[Node]) -> None:
    """Parent/child links must agree, and the root must be node 0."""
    if nodes[ROOT_INDEX].parent != NO_PARENT:
        raise ValueError("node 0 must be the root (parent -1)")
    for node in nodes:
        if node.node_id != ROOT_INDEX and not (0 <= node.parent < len(nodes)):
            raise ValueError(f"node {node.node_id} has parent {node.parent} outside the tree")
        if node.node_id != ROOT_INDEX and node.node_id not in nodes[node.parent].children:
            raise ValueError(f"node {node.node_id} is missing from its parent's children")
        for child in node.children:
            if not (0 <= child < len(nodes)) or nodes[child].parent != node.node_id:
                raise ValueError(f"node {node.node_id} lists child {child} whose parent differs")
