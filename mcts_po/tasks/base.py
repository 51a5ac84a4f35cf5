"""The Task interface every problem source implements (gsm8k, math, arithmetic, jsonl).

A task knows how to load problems, how to prompt for a step-by-step solution, how to
pull the final answer out of a model's text, and how to judge it. The search engine,
extraction and evaluation only ever talk to this interface.

Prompt convention shared by all tasks: each reasoning step is one paragraph (steps are
separated by a blank line, `STEP_DELIMITER`) and the solution ends with a recognisable
final answer line ("The answer is N." / `\\boxed{...}` for MATH).

    from mcts_po.tasks import get_task
    task = get_task("gsm8k")
    problems = task.load(split="test", limit=5, path="../shared/data/gsm8k")
    task.is_correct("... The answer is 18.", problems[0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STEP_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Problem:
    """One problem: a stable `id`, the question shown to the model and the gold final answer."""

    id: str
    question: str
    answer: str
    solution: str = ""  # reference solution, when the source has one (used by the optional hint)
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": self.answer,
                "solution": self.solution, "meta": dict(self.meta)}


class Task:
    """Base class. Subclasses set `name` and implement `load`, `extract_answer`, `answers_match`."""

    name: str = "task"
    # The system message and the instruction appended to each question.
    system_prompt: str = (
        "You are a careful math tutor. Solve the problem step by step. Write each step as one "
        "short paragraph and separate steps with a blank line."
    )
    answer_instruction: str = 'Finish with a last line of the form "The answer is N."'
    # Set by `load`: how many bad input lines `skip_bad_lines=True` skipped, and the source read.
    last_load_skipped: int = 0
    last_load_source: str | None = None

    def load(self, split: str = "test", limit: int | None = None, path: str | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        """Problems `offset .. offset+limit` of `split` from `path` (a JSONL file, a folder or
        a hub id; each task has a default). Bad input raises `InputError` naming file and
        line, or with `skip_bad_lines` is skipped and counted in `last_load_skipped`."""
        raise NotImplementedError

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """Chat messages for a problem; the backend renders them with the model's template."""
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": f"{problem.question.strip()}\n\n{self.answer_instruction}"},
        ]

    def prompt(self, problem: Problem) -> str:
        """A plain-text prompt, for models without a chat template."""
        return f"{self.system_prompt}\n\nQuestion: {problem.question.strip()}\n{self.answer_instruction}\n\nAnswer:\n"

    def extract_answer(self, text: str) -> str | None:
        """The final answer stated in `text`, or None if it states none."""
        raise NotImplementedError

    def has_final_answer(self, text: str) -> bool:
        return self.extract_answer(text) is not None

    def answers_match(self, predicted: str, gold: str) -> bool:
        raise NotImplementedError

    def is_correct(self, text: str, problem: Problem) -> bool:
        """True when `text` states a final answer equal to the problem's gold answer. Never raises."""
        predicted = self.extract_answer(text)
        if predicted is None:
            return False
        try:
            return bool(self.answers_match(predicted, problem.answer))
        except Exception:  # a verifier must never take down a search
            return False

    # nanochat-style conveniences
    def reward(self, text: str, problem: Problem) -> float:
        return 1.0 if self.is_correct(text, problem) else -1.0
