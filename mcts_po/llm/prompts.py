"""Self-evaluation prompts for search: the verdict question and its scoring.

(The text a node continues, its state, is built by `mcts_po.llm.node_text`.)

Self-evaluation asks the policy whether the newest step is correct, in one layout
(`self_eval_numbered_messages`): a teacher's chat that restates the problem and the path as
a numbered list, then "Is step k correct?". A child's question extends its parent's up to
the parent's step, so only the new step and the question are new to the prefix cache. The
score is P(yes) / (P(yes) + P(no)) read from the top log-probabilities of the first answer
token. The other layouts once offered ("separate", "followup", "question_first") were
measured worse and removed: docs/prompts.md ("Self-evaluation layout").

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
SELF_EVAL_LAYOUT = "numbered"  # the one layout (recorded in trees as sampling.self_eval_layout)
# Layouts measured worse and removed (docs/prompts.md, "Self-evaluation layout"), with their figures.
REMOVED_SELF_EVAL_LAYOUTS = {
    "separate": "verdict AUC 0.52 / 0.58 against numbered's 0.62 / 0.58, 7 % more prefill",
    "followup": "ranked good steps below bad ones, verdict AUC 0.23 / 0.32",
    "question_first": "no ranking gain over numbered and verdicts shifted to 'Yes' (mean 0.59 against 0.40)",
}


def reference_hint(reference_solution: str | None) -> str:
    """The reference-solution paragraph of a verdict question (empty without one)."""
    return f"Reference solution:\n{reference_solution.strip()}\n\n" if reference_solution else ""


def numbered_steps(steps: Sequence[str]) -> str:
    """The path as a numbered list, one line per step."""
    return "".join(f"{number}. {step.strip()}\n" for number, step in enumerate(steps, start=1))


def self_eval_numbered_messages(problem: Problem, steps: Sequence[str],
                                reference_solution: str | None = None) -> list[dict[str, str]]:
    hint = reference_hint(reference_solution)
    numbered = numbered_steps(steps)
    user = (
        f"Problem:\n{problem.question.strip()}\n\n{hint}"
        f"Solution steps:\n{numbered}\n"
        f"Is step {len(steps)} correct? Answer with one word, Yes or No."
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
