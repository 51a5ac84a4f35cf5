"""Selection rules shared by every extraction format: small pure helpers over trees.

Their settings are `ExtractConfig` (`mcts_po.extract.config`, which also tabulates which rule
applies to which format).

    from mcts_po.extract.selection import sibling_groups, near_duplicate
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Sequence

from mcts_po.extract.config import ExtractConfig
from mcts_po.search.tree import Node, Tree

# Q differences closer than this count as equal (q values are float averages).
Q_TOLERANCE = 1e-9


def margin_ok(q_chosen: float, q_rejected: float, min_q_margin: float) -> bool:
    """Strictly better, and by at least `min_q_margin` (with float tolerance)."""
    gap = q_chosen - q_rejected
    return gap > Q_TOLERANCE and gap >= min_q_margin - Q_TOLERANCE


_SPACE_RE = re.compile(r"\s+")
_SPACE_AROUND_SYMBOL_RE = re.compile(r"\s*([0-9+\-*/=^().,:$%<>×÷])\s*")


def normalise_text(text: str) -> str:
    """Lower case, single spaces, and no spaces around digits and arithmetic symbols:
    "3 + 4 = 7" and "3+4=7" normalise alike."""
    text = _SPACE_RE.sub(" ", text.strip().lower())
    return _SPACE_AROUND_SYMBOL_RE.sub(r"\1", text)


def text_similarity(a: str, b: str) -> float:
    """difflib ratio of the normalised texts, in [0, 1]; 1.0 for texts equal after normalisation."""
    a, b = normalise_text(a), normalise_text(b)
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.ratio()


_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def near_duplicate(a: str, b: str, threshold: float) -> bool:
    """Equal after `normalise_text`, or with the same numbers in the same order and a difflib
    ratio >= `threshold`. Steps whose numbers differ ("2 + 12 = 14" vs "2 + 12 = 15") are
    never duplicates: in arithmetic that one digit is the whole preference."""
    a, b = normalise_text(a), normalise_text(b)
    if a == b:
        return True
    if _NUMBER_RE.findall(a) != _NUMBER_RE.findall(b):
        return False
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return False  # upper bounds of the ratio: cheap early exit
    return matcher.ratio() >= threshold


# ---------------------------------------------------------------------------- tree helpers
def correct_path_nodes(tree: Tree) -> set[int]:
    """Ids of the nodes that lie on a root-to-terminal path ending in a verified-correct answer."""
    on_path: set[int] = set()
    for node in tree.nodes:
        if node.terminal and node.correct is True:
            current = node
            while current.node_id not in on_path:
                on_path.add(current.node_id)
                if current.is_root:
                    break
                current = tree.nodes[current.parent]
    return on_path


def sibling_groups(tree: Tree, config: ExtractConfig, counters: dict[str, int] | None = None) -> list[tuple[Node, list[Node]]]:
    """(parent, eligible children of one kind) for every parent that passes scope, level and
    visits rules, parents in id order. Children of different kinds are never compared."""
    allowed = correct_path_nodes(tree) if config.scope == "correct_paths" else None
    groups: list[tuple[Node, list[Node]]] = []
    for parent in tree.nodes:
        if len(parent.children) < 2:
            continue
        if allowed is not None and parent.node_id not in allowed:
            count_event(counters, "parents_outside_scope")
            continue
        by_kind: dict[str, list[Node]] = {}
        for child in tree.children(parent.node_id):
            by_kind.setdefault(child.kind, []).append(child)
        for kind, children in by_kind.items():
            if config.level != "all" and kind != config.level:
                count_event(counters, "groups_other_level")
                continue
            visited = [c for c in children if c.visits >= config.min_visits]
            if len(visited) < len(children):
                count_event(counters, "steps_below_min_visits", len(children) - len(visited))
            if len(visited) >= 2:
                groups.append((parent, visited))
    return groups


def best_child(children: Sequence[Node]) -> Node:
    """Highest Q; ties: more visits, then the lower node id."""
    return max(children, key=lambda c: (c.q, c.visits, -c.node_id))


def worst_child(children: Sequence[Node]) -> Node:
    """Lowest Q; ties: fewer visits, then the higher node id."""
    return min(children, key=lambda c: (c.q, c.visits, -c.node_id))


def greedy_continuation(tree: Tree, node_id: int) -> list[Node]:
    """The nodes below `node_id` down to a leaf, each the child with the most visits, then the
    highest Q, then the lowest id (the search's own "best path" rule)."""
    out: list[Node] = []
    node = tree.nodes[node_id]
    while node.children:
        node = max(tree.children(node.node_id), key=lambda c: (c.visits, c.q, -c.node_id))
        out.append(node)
    return out


def ends_solution(node: Node) -> bool:
    """True when the step finishes the solution (the model stopped or stated its answer), i.e.
    training text should end with EOS after it. Truncated terminals (max_depth / max_tokens)
    and every intermediate step are False."""
    return node.terminal and node.terminal_reason not in ("max_depth", "max_tokens")


def cap_pairs(pairs: list[Any], limit: int, margin_of, order_of) -> list[Any]:
    """Keep at most `limit` pairs (0 = all): largest margin first, ties by `order_of`; the kept
    pairs are returned in `order_of` order (tree order)."""
    if limit <= 0 or len(pairs) <= limit:
        return sorted(pairs, key=order_of)
    ranked = sorted(pairs, key=lambda p: (-margin_of(p), order_of(p)))[:limit]
    return sorted(ranked, key=order_of)


def count_event(counters: dict[str, int] | None, key: str, amount: int = 1) -> None:
    if counters is not None and amount:
        counters[key] = counters.get(key, 0) + amount
