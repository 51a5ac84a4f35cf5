"""A small deterministic SearchPolicy for exact tests of the search core (no model, no torch).

Children of a node are the letters "a", "b", "c", ... (k of them, or `branching` if
set). A step is terminal ("The answer is ...") at `answer_depth`; the answer is correct
when the path's steps contain "a" at every level (so the all-"a" path is the solution).
Self-evaluation is a fixed table by letter; rollouts are +1 when the path so far is all
"a". Every call is recorded so tests can check batching.

    policy = LetterPolicy(answer_depth=2)
    run_search(trees, policy, SearchConfig(num_simulations=4, use_rollout=False))
"""

from __future__ import annotations

import math
from typing import Sequence

from mcts_po.search.mcts import (
    STEP_ANSWER,
    STEP_CONTINUES,
    EvaluationRequest,
    ExpansionRequest,
    NodeEvaluation,
    StepProposal,
)
from mcts_po.search.tree import Tree

SELF_EVAL_BY_LETTER = {"a": 0.9, "b": 0.4, "c": 0.2, "d": 0.1}


class LetterPolicy:
    def __init__(self, answer_depth: int = 2, branching: int | None = None, duplicate_first: bool = False):
        self.answer_depth = answer_depth
        self.branching = branching
        self.duplicate_first = duplicate_first
        self.expand_calls: list[list[ExpansionRequest]] = []
        self.evaluate_calls: list[list[EvaluationRequest]] = []

    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        self.expand_calls.append(list(requests))
        out = []
        for request in requests:
            depth = trees[request.tree_index].nodes[request.node_id].depth + 1
            k = self.branching or request.num_children
            letters = [chr(ord("a") + i) for i in range(k)]
            if self.duplicate_first:
                letters = [letters[0]] + letters[:-1]  # "a" sampled twice
            proposals = []
            for rank, letter in enumerate(letters):
                final = depth >= self.answer_depth
                text = f"{letter} The answer is {depth}." if final else letter
                num_tokens = 2 + rank
                proposals.append(StepProposal(
                    text=text, num_tokens=num_tokens, logprob_sum=-0.5 * (rank + 1) * num_tokens,
                    finish=STEP_ANSWER if final else STEP_CONTINUES,
                ))
            out.append(proposals)
        return out

    def evaluate(self, trees: Sequence[Tree], requests: Sequence[EvaluationRequest]) -> list[NodeEvaluation]:
        self.evaluate_calls.append(list(requests))
        out = []
        for request in requests:
            steps = trees[request.tree_index].steps(request.node_id)
            all_a = all(step.startswith("a") for step in steps)
            if request.terminal:
                out.append(NodeEvaluation(answer=str(len(steps)), correct=all_a))
            else:
                letter = steps[-1][0]
                out.append(NodeEvaluation(self_eval=SELF_EVAL_BY_LETTER.get(letter, 0.0),
                                          rollout_value=1.0 if all_a else -1.0))
        return out


def expected_prior(logprob_sums: list[float], lengths: list[int], exponent: float = 1.25) -> list[float]:
    raw = [math.exp(lp / (n ** exponent)) for lp, n in zip(logprob_sums, lengths)]
    return [r / sum(raw) for r in raw]
