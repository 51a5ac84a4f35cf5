"""The `jsonl` task: your own problems from a JSONL file (or folder, or hub id), with the
field names you choose.

Options (all keyword arguments of `get_task("jsonl", ...)`):

* `question_field` ("question"), `answer_field` ("answer"), `solution_field` ("solution",
  optional in each row), `id_field` (None: ids are `{file stem}-{row index:05d}`);
* `answer_type`: "numeric" (one number; "The answer is N."; verify_numeric; an answer
  written GSM8K-style as "... #### N" is split into solution and N) or "math" (LaTeX
  answer in `\\boxed{}`; verify_math; a boxed answer field is unwrapped);
* `hub_config`: the config name when `path` is a hub id.

    from mcts_po.tasks import get_task
    task = get_task("jsonl", question_field="prompt", answer_field="target", id_field="uid")
    problems = task.load(path="my_problems.jsonl")

A folder path reads `{split}.jsonl` inside it. `path` is required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcts_po.io_utils import UserError
from mcts_po.tasks.base import Problem, Task
from mcts_po.tasks.competition_math import BoxedAnswerTask, math_final_answer
from mcts_po.tasks.gsm8k import (NumericAnswerTask, clean_gold_number, numeric_final_answer,
                                 split_gsm8k_answer)
from mcts_po.tasks.loading import RowError, load_problems, optional_text, required_text, resolve_source

ANSWER_TYPES = ("numeric", "math")


class JsonlTask(Task):
    """Problems from a user's JSONL file with configurable field names."""

    name = "jsonl"
    verify_timeout_s: float = 5.0

    def __init__(self, question_field: str = "question", answer_field: str = "answer",
                 solution_field: str | None = "solution", id_field: str | None = None,
                 answer_type: str = "numeric", hub_config: str | None = None):
        if answer_type not in ANSWER_TYPES:
            raise UserError(f"unknown answer_type {answer_type!r} for the jsonl task; "
                            f"valid: {', '.join(ANSWER_TYPES)}")
        for option, value in (("question_field", question_field), ("answer_field", answer_field)):
            if not isinstance(value, str) or not value:
                raise UserError(f"jsonl task option {option} must be a non-empty field name, got {value!r}")
        self.question_field = question_field
        self.answer_field = answer_field
        self.solution_field = solution_field or None
        self.id_field = id_field or None
        self.answer_type = answer_type
        self.hub_config = hub_config
        style = NumericAnswerTask if answer_type == "numeric" else BoxedAnswerTask
        self.answer_instruction = style.answer_instruction
        self.worked_example = style.worked_example
        self.last_load_skipped = 0
        self.last_load_source: str | None = None

    def load(self, split: str = "test", limit: int | None = None, path: str | Path | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        if options:
            raise UserError(f"jsonl.load() got unknown option(s): {', '.join(sorted(options))}")
        if path is None:
            raise UserError("the jsonl task needs a path: a JSONL file, a folder with "
                            f"{split}.jsonl, or a hub id (e.g. --path my_problems.jsonl)")
        source = resolve_source(path, split, [f"{split}.jsonl"], hub_config=self.hub_config)
        stem = Path(source.location).name.split(".")[0] if source.kind == "file" else \
            source.location.rsplit("/", 1)[-1]

        def parse_row(row: dict[str, Any], row_index: int) -> Problem:
            return self.parse_row(row, row_index, split, stem)

        return load_problems(self, source, parse_row, offset=offset, limit=limit,
                             skip_bad_lines=skip_bad_lines)

    def parse_row(self, row: dict[str, Any], row_index: int, split: str, stem: str) -> Problem:
        question = required_text(row, self.question_field)
        answer = required_text(row, self.answer_field)
        solution = optional_text(row, self.solution_field)
        if self.answer_type == "numeric":
            if "####" in answer:
                answer, worked_solution = split_gsm8k_answer(answer)
                solution = solution or worked_solution
            else:
                answer = clean_gold_number(answer)
        elif "\\boxed" in answer or "\\fbox" in answer:
            from mcts_po.verifiers import extract_boxed

            answer = extract_boxed(answer) or ""
            if not answer:
                raise RowError(f"field {self.answer_field!r} has an empty or unclosed \\boxed{{}}")
        if self.id_field:
            problem_id = required_text(row, self.id_field)
        else:
            problem_id = f"{stem}-{row_index:05d}"
        return Problem(id=problem_id, question=question, answer=answer, solution=solution,
                       meta={"task": self.name, "split": split, "row_index": row_index})

    def extract_answer(self, text: str) -> str | None:
        if self.answer_type == "numeric":
            return numeric_final_answer(text)
        return math_final_answer(text)

    def answers_match(self, predicted: str, gold: str) -> bool:
        from mcts_po.verifiers import verify_math, verify_numeric

        if self.answer_type == "numeric":
            return verify_numeric(predicted, gold)
        return verify_math(predicted, gold, timeout=self.verify_timeout_s)
