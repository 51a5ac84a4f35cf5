"""Prompt building for search: node states, self-evaluation questions, verdict scoring.

The state of a node is the task's chat prompt rendered by the model's template, followed
by the steps on its path, each ended by the step delimiter. Children therefore extend
their parent's prompt token for token, and siblings share it whole: the engine's prefix
cache serves both.

Self-evaluation asks the policy whether the newest step is correct. The question puts the
problem and the earlier steps first and the new step last, so the self-evaluations of
siblings share everything up to the new step. The score is P(yes) / (P(yes) + P(no))
read from the top log-probabilities of the first answer token.

    from mcts_po.llm.prompts import verdict_probability
    verdict_probability({" Yes": -0.1, " No": -2.3})
"""

from __future__ import annotations

import math
from typing import Sequence

from mcts_po.tasks.base import Problem

YES_WORDS = ("yes", "correct", "true")
NO_WORDS = ("no", "incorrect", "wrong", "false")

SELF_EVAL_SYSTEM = "You are a strict math teacher who checks one step of a student's solution at a time."


def state_text(root_prompt: str, steps: Sequence[str], delimiter: str) -> str:
    """The prompt that continues a node: the root prompt plus each step and its delimiter."""
    return root_prompt + "".join(step + delimiter for step in steps)


def self_eval_messages(problem: Problem, previous_steps: Sequence[str], new_step: str,
                       reference_solution: str | None = None) -> list[dict[str, str]]:
    earlier = "\n".join(previous_steps) if previous_steps else "(none yet)"
    hint = f"Reference solution:\n{reference_solution.strip()}\n\n" if reference_solution else ""
    user = (
        f"Problem:\n{problem.question.strip()}\n\n{hint}"
        f"Steps so far:\n{earlier}\n\n"
        f"New step:\n{new_step.strip()}\n\n"
        "Is the new step correct? Answer with one word, Yes or No."
    )
    return [{"role": "system", "content": SELF_EVAL_SYSTEM}, {"role": "user", "content": user}]


def verdict_probability(top_logprobs: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) over the verdict tokens in `top_logprobs`; 0.5 if neither appears."""
    yes = no = 0.0
    for token, logprob in top_logprobs.items():
        word = token.strip().lower()
        if not word or not math.isfinite(logprob):
            continue
        if word in YES_WORDS:
            yes += math.exp(logprob)
        elif word in NO_WORDS:
            no += math.exp(logprob)
    if yes + no <= 0:
        return 0.5
    return yes / (yes + no)
