"""Seeded synthetic search trees of any size, for viewer benchmarks and demos (not for training).

The shape imitates an MCTS tree over reasoning steps: each expansion adds 2-4 children
to a random open node (deeper nodes are preferred, so the tree grows paths, not only
width); leaves are closed as terminals with a random verdict; Q, visits, priors and
self-evaluations are drawn from a `random.Random(seed)` — no global RNG.

    from mcts_po.graphs.synthetic_trees import synthetic_tree
    tree = synthetic_tree(1000, seed=0)
    assert len(tree) == 1000
"""

from __future__ import annotations

import random

from mcts_po.search.tree import Tree

_WORDS = ("first", "compute", "the", "total", "of", "apples", "then", "subtract", "each", "box", "holds",
          "so", "we", "multiply", "by", "and", "add", "remaining", "cost", "per", "day", "which", "gives")


def _step_text(rng: random.Random, depth: int) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 24)))
    return f"Step {depth}: {words.capitalize()}: {a} + {b} = {a + b}."


def synthetic_tree(num_nodes: int, seed: int = 0, problem_id: str | None = None, plan_share: float = 0.1) -> Tree:
    """A tree with exactly `num_nodes` nodes (>= 1)."""
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    rng = random.Random(seed)
    tree = Tree.new(problem_id=problem_id or f"synthetic-{num_nodes}-{seed}",
                    question=f"Synthetic problem with {num_nodes} nodes (seed {seed}). What is the total?",
                    gold_answer="42", task="synthetic", model="none", backend="synthetic", seed=seed)
    open_nodes = [0]
    while len(tree) < num_nodes and open_nodes:
        weights = [1 + tree.nodes[i].depth for i in open_nodes]
        parent = rng.choices(open_nodes, weights=weights)[0]
        open_nodes.remove(parent)
        for _ in range(min(rng.randint(2, 4), num_nodes - len(tree))):
            depth = tree.nodes[parent].depth + 1
            kind = "plan" if depth == 1 and rng.random() < plan_share else "step"
            child = tree.add_child(parent, kind=kind, text=_step_text(rng, depth), q=round(rng.uniform(-1, 1), 4),
                                   visits=rng.randint(1, 20), prior=round(rng.random(), 4),
                                   self_eval=round(rng.random(), 4), num_tokens=rng.randint(10, 60),
                                   logprob_sum=round(-rng.uniform(1, 30), 3), wave=depth)
            open_nodes.append(child.node_id)
    for node in tree.nodes:
        if not node.children and node.node_id != 0:
            node.terminal = True
            node.terminal_reason = "answer"
            node.correct = rng.random() < 0.3
            node.answer = "42" if node.correct else str(rng.randint(0, 99))
            node.q = 1.0 if node.correct else -1.0
    return tree
