"""The Task interface every problem source implements (gsm8k, math, arithmetic, jsonl).

A task knows how to load problems, how to prompt for a step-by-step solution, how to
pull the final answer out of a model's text, and how to judge it. The search engine,
extraction and evaluation only ever talk to this interface.

Prompt convention shared by all tasks: each reasoning step is one line (steps are separated
by a newline, `STEP_DELIMITER`; small chat models such as SmolLM2 write one step per line)
and the solution ends with a recognisable final answer line ("The answer is N." /
`\\boxed{...}` for MATH). The chat prompt is a system message with the format, one worked
example exchange (it is what makes a 135M model follow the format: measured in
docs/prompts.md), then the question.

    from mcts_po.tasks import get_task
    task = get_task("gsm8k")
    problems = task.load(split="test", limit=5, path="../shared/data/gsm8k")
    task.is_correct("... The answer is 18.", problems[0])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STEP_DELIMITER = "\n"


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
    # The system message is `system_prompt` followed by `answer_instruction`; `worked_example`
    # (question, solution) is shown as one earlier user/assistant exchange.
    system_prompt: str = (
        "You are a careful math tutor. Solve the problem step by step. Write each step on its own "
        "line as one short sentence with one calculation."
    )
    answer_instruction: str = 'End with a line of the form "The answer is N."'
    worked_example: tuple[str, str] | None = (
        "A baker makes 4 trays of muffins with 6 muffins on each tray. She sells 15 muffins. "
        "How many muffins are left?",
        "The baker makes 4 * 6 = 24 muffins.\nAfter selling 15, she has 24 - 15 = 9 muffins left.\n"
        "The answer is 9.",
    )
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
        messages = [{"role": "system", "content": f"{self.system_prompt} {self.answer_instruction}"}]
        if self.worked_example is not None:
            example_question, example_solution = self.worked_example
            messages += [{"role": "user", "content": example_question},
                         {"role": "assistant", "content": example_solution}]
        messages.append({"role": "user", "content": problem.question.strip()})
        return messages

    def prompt(self, problem: Problem) -> str:
        """A plain-text prompt, for models without a chat template."""
        example = ""
        if self.worked_example is not None:
            example = f"Question: {self.worked_example[0]}\nAnswer:\n{self.worked_example[1]}\n\n"
        return (f"{self.system_prompt} {self.answer_instruction}\n\n{example}"
                f"Question: {problem.question.strip()}\nAnswer:\n")

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
