"""Texts and trajectories read off a tree: training prompts, step prefixes, complete paths.

The text that continues a node (what the policy saw when it proposed the next step) is
built by `mcts_po.llm.node_text`, the same module the search's policy uses, so a training
prompt is byte for byte what the engine was sent: for step trees `tree.prompt` + each step on
the path + the delimiter (`tree.sampling["step_delimiter"]`, a newline by default). Hand-built
trees may have an empty `tree.prompt`; the question followed by a newline stands in for it.

A complete trajectory is a root-to-terminal path. Its value is +1 / -1 from the
verifier's verdict on the terminal (`correct`), or the terminal's Q when it has no verdict.

    from mcts_po.extract.tree_text import complete_trajectories, training_prompt
    ranked = complete_trajectories(tree)   # best first
    training_prompt(tree, node_id)         # rendered prompt + the steps down to node_id
"""

from __future__ import annotations

from dataclasses import dataclass

from mcts_po.extract.selection import normalise_text
from mcts_po.llm import node_text
from mcts_po.search.tree import Node, Tree
from mcts_po.tasks.base import STEP_DELIMITER


def root_prompt(tree: Tree) -> str:
    """The rendered chat prompt the search started from (or the question + a newline)."""
    return node_text.stored_root_prompt(tree)


def step_delimiter(tree: Tree) -> str:
    """The delimiter the search ended steps with (`tree.sampling["step_delimiter"]`), else STEP_DELIMITER."""
    return node_text.stored_delimiter(tree)


def continuation_prompt(tree: Tree, node_id: int) -> tuple[str, str]:
    """(the prompt that continues `node_id`, the steps part of it): `node_text.stored_node_text`.
    Step trees: root prompt + the steps on the path. Plan trees: while the plan is open, the plan
    prompt + the plan steps; below a complete plan, the solution prompt with the plan in it +
    the solution steps."""
    return node_text.stored_node_text(tree, node_id)


def training_prompt(tree: Tree, node_id: int) -> str:
    """The prompt that continues `node_id`, as the search wrote it (see `continuation_prompt`)."""
    return continuation_prompt(tree, node_id)[0]


def join_steps(steps: list[str], delimiter: str = STEP_DELIMITER) -> str:
    """A whole (partial) solution: the steps joined by the search's step delimiter."""
    return delimiter.join(steps)


@dataclass(frozen=True)
class Trajectory:
    """A root-to-terminal path (root excluded) and its value."""

    nodes: tuple[Node, ...]
    value: float
    delimiter: str = STEP_DELIMITER  # the tree's step delimiter, for `text`

    @property
    def terminal(self) -> Node:
        return self.nodes[-1]

    @property
    def steps(self) -> list[str]:
        return [n.text for n in self.nodes]

    @property
    def text(self) -> str:
        return join_steps(self.steps, self.delimiter)

    @property
    def mean_q(self) -> float:
        return sum(n.q for n in self.nodes) / len(self.nodes)


def trajectory_value(terminal: Node) -> float:
    if terminal.correct is True:
        return 1.0
    if terminal.correct is False:
        return -1.0
    return float(terminal.q)


def rank_key(trajectory: Trajectory) -> tuple[float, float, int]:
    """Best first: higher value, then higher mean step Q, then the lower terminal id."""
    return (-trajectory.value, -trajectory.mean_q, trajectory.terminal.node_id)


def complete_trajectories(tree: Tree) -> list[Trajectory]:
    """Every root-to-terminal path of the tree, ranked best first (`rank_key`)."""
    out = [
        Trajectory(nodes=tuple(tree.path(node.node_id)), value=trajectory_value(node), delimiter=step_delimiter(tree))
        for node in tree.nodes
        if node.terminal and not node.is_root
    ]
    return sorted(out, key=rank_key)


def distinct_texts(ranked: list[Trajectory]) -> list[Trajectory]:
    """Each solution text once (equal after `normalise_text`), keeping the first (best-ranked)."""
    seen: set[str] = set()
    out = []
    for trajectory in ranked:
        key = normalise_text(trajectory.text)
        if key not in seen:
            seen.add(key)
            out.append(trajectory)
    return out
