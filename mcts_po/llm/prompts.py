"""Prompt building for search: node states, self-evaluation questions, verdict scoring.

The state of a node is the task's chat prompt rendered by the model's template, followed
by the steps on its path, each ended by the step delimiter. Children therefore extend
their parent's prompt token for token, and siblings share it whole: the engine's prefix
cache serves both.

Self-evaluation asks the policy whether the newest step is correct, in one of three layouts
(`SamplingConfig.self_eval_layout`):

- "followup": the node's own state, its assistant turn closed, then a new user
  turn with the question (`followup_suffix`). The prompt starts with the exact text the
  node's rollout continues and its children are sampled from, so the engine's prefix
  cache already holds all of it but the question.
- "separate": a new chat with a teacher's system message that restates the problem, the
  earlier steps and the new step (MCTS-DPO's layout; `self_eval_messages`). Siblings share
  everything up to the new step, but nothing is shared with the node's own state.
- "numbered" (default): the same teacher's chat with the path as a numbered list and the
  question "Is step k correct?" after it (`self_eval_numbered_messages`): a child's
  question extends its parent's up to the parent's step, so only the new step and the
  question are new to the prefix cache.
- "question_first": the numbered chat with the question before the problem
  (`self_eval_question_first_messages`), so the prompt ends with the path and a child's
  prompt extends its parent's up to the chat template's closing tokens: per child only the
  new step is new, not the question.

Either way the score is P(yes) / (P(yes) + P(no)) read from the top log-probabilities of
the first answer token. Which layout ranks good steps higher, and what each costs in
prefilled tokens: docs/prompts.md ("Self-evaluation layout").

    from mcts_po.llm.prompts import verdict_probability
    verdict_probability({" Yes": -0.1, " No": -2.3})
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from mcts_po.tasks.base import Problem

YES_WORDS = ("yes", "correct", "true")
NO_WORDS = ("no", "incorrect", "wrong", "false")

SELF_EVAL_SYSTEM = "You are a strict math teacher who checks one step of a student's solution at a time."
SELF_EVAL_LAYOUTS = ("followup", "separate", "numbered", "question_first")
QUESTION_FIRST = "Is the last of the solution steps below correct? Answer with one word, Yes or No."
FOLLOWUP_QUESTION = "Is the last line of your solution correct? Answer with one word, Yes or No."
_STATE_MARKER = "\u2063MCTS_PO_STATE\u2063"  # stands for the node's state while the suffix is rendered


def state_text(root_prompt: str, steps: Sequence[str], delimiter: str) -> str:
    """The prompt that continues a node: the root prompt plus each step and its delimiter."""
    return root_prompt + "".join(step + delimiter for step in steps)


def reference_hint(reference_solution: str | None) -> str:
    """The reference-solution paragraph of a verdict question (empty without one)."""
    return f"Reference solution:\n{reference_solution.strip()}\n\n" if reference_solution else ""


def numbered_steps(steps: Sequence[str]) -> str:
    """The path as a numbered list, one line per step."""
    return "".join(f"{number}. {step.strip()}\n" for number, step in enumerate(steps, start=1))


def self_eval_messages(problem: Problem, previous_steps: Sequence[str], new_step: str,
                       reference_solution: str | None = None) -> list[dict[str, str]]:
    earlier = "\n".join(previous_steps) if previous_steps else "(none yet)"
    hint = reference_hint(reference_solution)
    user = (
        f"Problem:\n{problem.question.strip()}\n\n{hint}"
        f"Steps so far:\n{earlier}\n\n"
        f"New step:\n{new_step.strip()}\n\n"
        "Is the new step correct? Answer with one word, Yes or No."
    )
    return [{"role": "system", "content": SELF_EVAL_SYSTEM}, {"role": "user", "content": user}]


def followup_suffix(render_chat: Callable[[list[dict[str, str]]], str],
                    reference_solution: str | None = None) -> str:
    """The text that turns a node's state into its "followup" self-evaluation prompt.

    The chat template renders [user, assistant(<state marker>), user(question)] with the
    generation prompt; what follows the marker closes the assistant turn, asks the
    question and opens the answer. The node's state already ends with its open assistant
    turn, so `state + suffix` is the chat the template would render with the steps as
    the assistant's message.
    """
    hint = reference_hint(reference_solution)
    rendered = render_chat([
        {"role": "user", "content": "Solve the problem."},
        {"role": "assistant", "content": _STATE_MARKER},
        {"role": "user", "content": hint + FOLLOWUP_QUESTION},
    ])
    if rendered.count(_STATE_MARKER) != 1:
        raise ValueError("the chat template does not render the assistant's message verbatim; "
                         "use self_eval_layout='separate' with this model")
    return rendered.split(_STATE_MARKER, 1)[1]


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


def self_eval_question_first_messages(problem: Problem, steps: Sequence[str],
                                      reference_solution: str | None = None) -> list[dict[str, str]]:
    hint = reference_hint(reference_solution)
    numbered = numbered_steps(steps)
    user = f"{QUESTION_FIRST}\n\nProblem:\n{problem.question.strip()}\n\n{hint}Solution steps:\n{numbered}"
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
