"""Selection rules shared by every extraction format: the `ExtractConfig` and small pure helpers.

`ExtractConfig` is a TRL-style dataclass: each field carries `metadata={"help": ...}` (the
`mcts-po extract` flags are built from it) and is validated in `__post_init__`, so a bad
value fails at once with a message naming the field and the valid choices.

Which rule applies to which format:

| rule                | step-dpo | step-apo | tpo | dpo | sft | value | ppm |
|---------------------|----------|----------|-----|-----|-----|-------|-----|
| min_q_margin        |    x     |    x     |     |     |     |       |     |
| min_visits          |    x     |    x     |     |     |     |   x   |  x  |
| scope               |    x     |    x     |     |     |     |       |  x  |
| level               |    x     |    x     |     |     |     |       |  x  |
| max_pairs_per_tree  |    x     |    x     |     |  x  |     |       |     |
| dedup_threshold     |    x     |    x     |     |  x  |     |       |  x  |
| same_ending         |    x     |    x     |     |     |     |       |     |
| apo_rule/baseline   |          |    x     |     |     |     |       |     |
| max_list_size       |          |          |  x  |     |     |       |     |
| ppm_min_q_margin    |          |          |     |     |     |       |  x  |
| ppm_pairs_per_side  |          |          |     |     |     |       |  x  |

(`tpo` and `sft` always drop exact duplicates after text normalisation.)

    from mcts_po.extract.selection import ExtractConfig
    config = ExtractConfig(min_q_margin=0.5, scope="correct_paths")
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from mcts_po.search.tree import Node, Tree

SCOPES = ("anywhere", "correct_paths")
LEVELS = ("all", "step", "plan")
APO_RULES = ("cpl", "margin")
APO_BASELINES = ("parent", "zero")

# Q differences closer than this count as equal (q values are float averages).
Q_TOLERANCE = 1e-9


@dataclass
class ExtractConfig:
    min_q_margin: float = field(default=0.0, metadata={
        "help": "pairs need q_chosen - q_rejected >= this; 0 means strictly greater (equal Q never makes a pair)"})
    min_visits: int = field(default=1, metadata={
        "help": "both steps of a pair need at least this many visits; value: paths stop above a node with fewer"})
    scope: str = field(default="anywhere", metadata={
        "help": f"where pairs may come from: {', '.join(SCOPES)} (correct_paths = only parents on a path "
                "to a verified-correct terminal)"})
    max_pairs_per_tree: int = field(default=0, metadata={
        "help": "keep at most this many pairs per tree, largest Q margin first (0 = no limit)"})
    dedup_threshold: float = field(default=0.9, metadata={
        "help": "drop a pair whose chosen and rejected texts are this similar (difflib ratio after "
                "normalising case, whitespace and spacing around digits, and only when both hold the same "
                "numbers); 1.0 drops only texts equal after normalisation"})
    same_ending: bool = field(default=False, metadata={
        "help": "pair only steps that both end the solution (state an answer or stop) or both do not "
                "(step-dpo: the rejected step is the worst sibling ending like the chosen one): an unfinished "
                "step preferred to a wrong final answer also teaches the policy not to answer (benchmarks/loop.md)"})
    level: str = field(default="all", metadata={
        "help": f"which tree level pairs come from: {', '.join(LEVELS)} (plan = abstract plan steps)"})
    apo_rule: str = field(default="cpl", metadata={
        "help": f"step-apo pairing: {', '.join(APO_RULES)} (cpl = every sibling above the baseline vs "
                "every sibling below it; margin = every sibling pair with a Q gap >= min_q_margin)"})
    apo_baseline: str = field(default="parent", metadata={
        "help": f"step-apo value baseline of the cpl rule: {', '.join(APO_BASELINES)} (parent = the parent's Q)"})
    max_list_size: int = field(default=5, metadata={
        "help": "tpo: trajectories per ranked list (distinct values first)"})
    ppm_min_q_margin: float = field(default=0.5, metadata={
        "help": "ppm: pairs need q_chosen - q_rejected >= this (rStar-Math drops pairs below 0.5)"})
    ppm_pairs_per_side: int = field(default=2, metadata={
        "help": "ppm: per parent, this many highest-Q correct-leading steps x this many lowest-Q wrong-leading ones"})

    def __post_init__(self) -> None:
        _choice("scope", self.scope, SCOPES)
        _choice("level", self.level, LEVELS)
        _choice("apo_rule", self.apo_rule, APO_RULES)
        _choice("apo_baseline", self.apo_baseline, APO_BASELINES)
        _number("min_q_margin", self.min_q_margin, float)
        if not 0.0 <= self.min_q_margin <= 2.0:
            raise ValueError(f"ExtractConfig.min_q_margin must be in [0, 2] (Q lies in [-1, 1]), got {self.min_q_margin!r}")
        if not isinstance(self.same_ending, bool):
            raise ValueError(f"ExtractConfig.same_ending must be true or false, got {self.same_ending!r}")
        _number("ppm_min_q_margin", self.ppm_min_q_margin, float)
        if not 0.0 <= self.ppm_min_q_margin <= 2.0:
            raise ValueError(f"ExtractConfig.ppm_min_q_margin must be in [0, 2] (Q lies in [-1, 1]), got {self.ppm_min_q_margin!r}")
        _number("dedup_threshold", self.dedup_threshold, float)
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError(f"ExtractConfig.dedup_threshold must be in (0, 1], got {self.dedup_threshold!r}")
        for name, lowest in (("min_visits", 0), ("max_pairs_per_tree", 0), ("max_list_size", 2), ("ppm_pairs_per_side", 1)):
            value = getattr(self, name)
            _number(name, value, int)
            if value < lowest:
                raise ValueError(f"ExtractConfig.{name} must be >= {lowest}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"ExtractConfig.{name} = {value!r} is not one of: {', '.join(valid)}")


def _number(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if not ok or isinstance(value, bool):
        raise ValueError(f"ExtractConfig.{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")


# ---------------------------------------------------------------------------- pair rules
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
