"""Prompts of plan trees (CPL): the plan prompt, the solution prompt with a plan, plan self-evaluation.

- `plan_messages(task, problem)`: asks for a short plan, one abstract strategy step per
  line, no calculations, ended by the line `PLAN_END_TEXT` ("Now solve."). The search
  samples the plan one line (one plan step) at a time from this prompt.
- `solution_messages(task, problem, plan)`: the task's own step-by-step prompt
  (`task.messages`) with the plan appended to the user message. Rendered once per problem
  with `PLAN_PLACEHOLDER` in place of the plan, it becomes the template stored in the tree.
- `plan_self_eval_messages(...)`: asks whether a new plan step is a sensible next step.
- `classify_plan_line(text, has_final_answer)`: what a sampled plan line is: a plan step, the end of
  the plan (an empty line, the model stopping, or a marker line such as "Now solve."), or
  not a plan step at all (a line stating a final answer).

    from mcts_po.llm.plan_prompts import classify_plan_line
    classify_plan_line("Now solve.")   # PLAN_LINE_END
"""

from __future__ import annotations

import re
from typing import Sequence

from mcts_po.search.plan import PLAN_END_TEXT
from mcts_po.tasks.base import Problem, Task

PLAN_SYSTEM = (
    "You are a careful math tutor. Before anyone solves a problem, you write a short plan: "
    "a few strategy steps, one per line, that say what to find and how, without doing any arithmetic. "
    f'After the plan, write the line "{PLAN_END_TEXT}"'
)
PLAN_INSTRUCTION = "Write the plan only, at most 3 short steps, no numbers worked out."
SOLUTION_PLAN_INTRO = "Follow this plan:"

# One worked example of a plan, shown as an earlier exchange (SmolLM2 follows formats it is shown).
PLAN_EXAMPLE_QUESTION = (
    "A baker makes 4 trays of muffins with 6 muffins on each tray. She sells 15 muffins. "
    "How many muffins are left?"
)
PLAN_EXAMPLE_STEPS = (
    "Find how many muffins the baker makes in total.",
    "Take away the muffins she sells.",
)

PLAN_SELF_EVAL_SYSTEM = "You are a strict math teacher who checks a student's plan for solving a problem."

PLAN_LINE_STEP = "step"  # an ordinary plan step
PLAN_LINE_END = "end"  # the plan is complete
PLAN_LINE_REJECT = "reject"  # not a plan step (e.g. it states the final answer)

# Lines that close a plan: the requested marker and the ways a small model paraphrases it.
_PLAN_END_RE = re.compile(
    r"^\W*(?:now[, ]+(?:let'?s |we |i will |i'll )?solve(?: it| the problem)?|"
    r"(?:the )?plan (?:is )?(?:complete|done|finished)|end of (?:the )?plan|let'?s solve(?: it| the problem)?)\W*$",
    re.IGNORECASE,
)


def plan_messages(task: Task, problem: Problem) -> list[dict[str, str]]:
    """System instruction, the worked plan example, then the problem (the plan is sampled after it)."""
    example_plan = "\n".join(PLAN_EXAMPLE_STEPS + (PLAN_END_TEXT,))
    return [
        {"role": "system", "content": PLAN_SYSTEM},
        {"role": "user", "content": f"{PLAN_EXAMPLE_QUESTION}\n\n{PLAN_INSTRUCTION}"},
        {"role": "assistant", "content": example_plan},
        {"role": "user", "content": f"{problem.question.strip()}\n\n{PLAN_INSTRUCTION}"},
    ]


def with_plan(content: str, plan: str) -> str:
    return f"{content}\n\n{SOLUTION_PLAN_INTRO}\n{plan}"


def solution_messages(task: Task, problem: Problem, plan: str) -> list[dict[str, str]]:
    """The task's prompt (`task.messages`) with `plan` appended to the last user message; when
    the task's worked example is the one the plan example is about, its question shows that plan."""
    messages = [dict(m) for m in task.messages(problem)]
    example = getattr(task, "worked_example", None)
    if example is not None and example[0] == PLAN_EXAMPLE_QUESTION:
        for message in messages[:-1]:
            if message["role"] == "user" and message["content"] == PLAN_EXAMPLE_QUESTION:
                message["content"] = with_plan(message["content"], "\n".join(PLAN_EXAMPLE_STEPS))
                break
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = with_plan(message["content"], plan)
            break
    else:
        messages.append({"role": "user", "content": f"{SOLUTION_PLAN_INTRO}\n{plan}"})
    return messages


def plan_self_eval_messages(problem: Problem, previous_steps: Sequence[str], new_step: str) -> list[dict[str, str]]:
    earlier = "\n".join(previous_steps) if previous_steps else "(none yet)"
    user = (
        f"Problem:\n{problem.question.strip()}\n\n"
        f"Plan so far:\n{earlier}\n\n"
        f"New plan step:\n{new_step.strip()}\n\n"
        "Is the new plan step a sensible next step towards the answer? Answer with one word, Yes or No."
    )
    return [{"role": "system", "content": PLAN_SELF_EVAL_SYSTEM}, {"role": "user", "content": user}]


def is_plan_end_line(text: str) -> bool:
    """True for a line that closes a plan ("Now solve.", "Plan complete", "Let's solve it.")."""
    return bool(_PLAN_END_RE.match(" ".join(text.split())))


def classify_plan_line(text: str, has_final_answer: bool = False) -> str:
    """PLAN_LINE_END for an empty line (the model stopped or left a blank line) or a marker
    line; PLAN_LINE_REJECT for a line that states the final answer; else PLAN_LINE_STEP."""
    stripped = text.strip()
    if not stripped or is_plan_end_line(stripped):
        return PLAN_LINE_END
    if has_final_answer:
        return PLAN_LINE_REJECT
    return PLAN_LINE_STEP
