"""A search tree as text for the terminal (`mcts-po show RUN --problem ID`).

One line per node: tree guides, a kind mark, the node id, the step shortened to one
line, then its values. Marks:

    ◉ root    ● step    ◆ plan step    ■ terminal (any kind)
    ✓ / ✗     verifier verdict of a terminal answer (? when not verified)
    *         on the best path (`Tree.best_path()`: most visits, then Q)
    ▲ / ▼     chosen / rejected step of a preference pair (`view_pairs.view_pairs`)
    Q N p se r   Q value, visits, prior, self-evaluation, rollout value

    from mcts_po.graphs.text_view import render_tree_text
    print(render_tree_text(tree, max_depth=4, width=120))
"""

from __future__ import annotations

from mcts_po.graphs.view_pairs import view_pairs
from mcts_po.search.tree import Node, Tree

KIND_MARKS = {"root": "◉", "plan": "◆", "step": "●"}
TERMINAL_MARK = "■"
MIN_TEXT_WIDTH = 12


def one_line(text: str, width: int) -> str:
    """Whitespace collapsed to single spaces, cut to `width` characters with '…'."""
    flat = " ".join(text.split())
    if width <= 0:
        return ""
    if len(flat) <= width:
        return flat
    return flat[: max(width - 1, 0)] + "…"


def verdict_mark(node: Node) -> str:
    if not node.terminal:
        return ""
    if node.correct is True:
        return "✓"
    if node.correct is False:
        return "✗"
    return "?"


def node_values(node: Node) -> str:
    """The values column of one node: `Q=+0.50 N=3 p=0.60 se=0.90 r=+1 ✓ ans=5 [answer]`."""
    parts = [f"Q={node.q:+.2f}", f"N={node.visits}"]
    if node.kind != "root":
        parts.append(f"p={node.prior:.2f}")
    if node.self_eval is not None:
        parts.append(f"se={node.self_eval:.2f}")
    if node.rollout_value is not None:
        parts.append(f"r={node.rollout_value:+.0f}")
    if node.terminal:
        mark = verdict_mark(node)
        answer = f" ans={one_line(node.answer, 16)}" if node.answer is not None else ""
        reason = f" [{node.terminal_reason}]" if node.terminal_reason else ""
        parts.append(f"{mark}{answer}{reason}")
    return " ".join(parts)


def render_tree_text(tree: Tree, max_depth: int | None = None, width: int = 100, pair_source: str = "auto") -> str:
    """The tree as lines of text no longer than `width` (when the values fit); pairs from
    `pair_source` (see `view_pairs`)."""
    best = {n.node_id for n in tree.best_path()}
    roles: dict[int, str] = {}
    pairs, used_source = view_pairs(tree, pair_source)
    for pair in pairs:
        roles[pair.chosen] = "▲"
        roles[pair.rejected] = "▼"
    solved = "yes" if tree.has_correct_terminal() else "no"
    best_path = tree.best_path()
    best_end = best_path[-1] if best_path else tree.root
    best_answer = (f"{one_line(best_end.answer, 40) if best_end.answer is not None else '(no answer)'} "
                   f"{verdict_mark(best_end)}" if best_end.terminal else "(not terminal)")
    lines = [
        f"problem {tree.problem_id}  tree {tree.tree_id}  kind {tree.tree_kind}  nodes {len(tree)}",
        f"question: {one_line(tree.question, max(width - 10, MIN_TEXT_WIDTH))}",
        f"gold: {one_line(tree.gold_answer, 40)}  solved (a correct terminal): {solved}  "
        f"best path answer: {best_answer}",
        f"marks: * best path, ▲/▼ chosen/rejected ({len(pairs)} pairs from {used_source}), ✓/✗ verdict, ■ terminal, ◆ plan",
    ]

    def visit(node: Node, guide: str, branch: str) -> None:
        mark = TERMINAL_MARK if node.terminal else KIND_MARKS.get(node.kind, "●")
        flags = ("*" if node.node_id in best else "") + roles.get(node.node_id, "")
        head = f"{guide}{branch}{mark} [{node.node_id}]{flags} "
        values = node_values(node)
        text_width = max(width - len(head) - len(values) - 2, MIN_TEXT_WIDTH)
        text = "(root)" if node.kind == "root" else one_line(node.text, text_width)
        lines.append(f"{head}{text.ljust(text_width)}  {values}".rstrip())
        children = tree.children(node.node_id)
        if not children:
            return
        child_guide = guide + ("" if not branch else ("    " if branch.startswith("└") else "│   "))
        if max_depth is not None and node.depth >= max_depth:
            hidden = _count_below(tree, node.node_id)
            lines.append(f"{child_guide}└── … {hidden} more node{'s' if hidden != 1 else ''} below")
            return
        for index, child in enumerate(children):
            visit(child, child_guide, "└── " if index == len(children) - 1 else "├── ")

    visit(tree.root, "", "")
    return "\n".join(lines) + "\n"


def _count_below(tree: Tree, node_id: int) -> int:
    count, stack = 0, list(tree.nodes[node_id].children)
    while stack:
        count += 1
        stack.extend(tree.nodes[stack.pop()].children)
    return count
