"""GSM8K-style tasks: grade-school word problems with a single number as the answer.

`GSM8KTask` reads GSM8K rows (`question`, `answer` ending in `#### N`) from a JSONL file,
a folder holding `{split}.jsonl` or `gsm8k/{split}.jsonl`, or the hub (`openai/gsm8k`,
config `main`, the default when no path is given). The same class, named `demo`, reads
the bundled `data/demo_problems.jsonl` (rows with `id`, `question`, `answer`, `solution`).

Answers: the model is asked to end with "The answer is N."; `extract_answer` takes the
number after the last "answer is" (falling back to the last `\\boxed{}`), and
`answers_match` is `mcts_po.verifiers.verify_numeric`.

    from mcts_po.tasks import get_task
    task = get_task("gsm8k")
    problems = task.load("test", limit=10, path="../shared/data/gsm8k")
    task.is_correct("16 - 3 - 4 = 9 eggs.\\n\\nThe answer is 18.", problems[0])   # True
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcts_po.tasks.base import STEP_DELIMITER, Problem, Task
from mcts_po.tasks.loading import (RowError, load_problems, optional_text, required_text,
                                   resolve_source)

GSM8K_HUB_ID = "openai/gsm8k"
GSM8K_HUB_CONFIG = "main"

# "The answer is", "the final answer is:", "Answer is" ... the last one in the text counts.
FINAL_ANSWER_PHRASE = re.compile(r"\banswer\s+is\b\s*:?", re.IGNORECASE)
# The first number in a short piece of text: optional sign and currency, thousands commas,
# decimals, a slash fraction. A trailing full stop is not part of the number.
_FIRST_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212])?\s?\\?\$?\s?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+))?(?!\d)"
)
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_GSM8K_ANSWER_MARKER = "####"
_NUMBER_WITH_COMMAS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def final_answer_tail(text: str) -> str | None:
    """What follows the last "answer is" up to the end of its line, stripped; None when the
    text has no such phrase or nothing follows it (a cut-off generation)."""
    if not isinstance(text, str):
        return None
    last = None
    for last in FINAL_ANSWER_PHRASE.finditer(text):
        pass
    if last is None:
        return None
    tail = text[last.end():].split("\n", 1)[0].strip()
    return tail or None


def first_number(text: str) -> str | None:
    """The first number in `text`, cleaned ("$1,234" -> "1234", "-5", "3/4"), or None."""
    match = _FIRST_NUMBER.search(text)
    if match is None:
        return None
    sign = "-" if match.group("sign") else ""
    number = match.group("num").replace(",", "")
    if match.group("den"):
        number += "/" + match.group("den")
    return sign + number


def numeric_final_answer(text: str) -> str | None:
    """The final numeric answer stated in `text`, or None when it states none.

    After the last "The answer is": the number there (after the last "=" when the model
    wrote a calculation, e.g. "The answer is 9 * 2 = 18."), else the raw phrase (a stated
    but non-numeric answer is still a final answer; it just will not verify). Without the
    phrase: the content of the last `\\boxed{}`. Intermediate steps give None.
    """
    tail = final_answer_tail(text)
    if tail is not None:
        if "\\boxed" in tail:
            from mcts_po.verifiers import extract_boxed

            boxed = extract_boxed(tail)
            if boxed is None:  # an unclosed box: the answer was cut off
                return None
            return first_number(boxed) or boxed
        if "=" in tail:
            after_equals = tail.rsplit("=", 1)[1]
            number = first_number(after_equals)
            if number is not None:
                return number
        number = first_number(tail)
        return number if number is not None else tail.rstrip(".").strip() or None
    if not isinstance(text, str) or "\\boxed" not in text and "\\fbox" not in text:
        return None
    from mcts_po.verifiers import extract_boxed

    boxed = extract_boxed(text)
    if not boxed:
        return None
    return first_number(boxed) or boxed


def clean_gold_number(text: str) -> str:
    """A gold answer as written in the data, without thousands commas ("1,000" -> "1000")."""
    text = text.strip()
    return text.replace(",", "") if _NUMBER_WITH_COMMAS.match(text) else text


def gsm8k_solution_text(worked_answer: str, gold: str) -> str:
    """GSM8K's worked answer in this project's step format: calculator annotations
    (`<<16-3-4=9>>`) removed, one paragraph per line, and "The answer is N." at the end."""
    body = _CALCULATOR_ANNOTATION.sub("", worked_answer)
    steps = [line.strip() for line in body.split("\n") if line.strip()]
    steps.append(f"The answer is {gold}.")
    return STEP_DELIMITER.join(steps)


def split_gsm8k_answer(answer_field: str) -> tuple[str, str]:
    """(gold answer, solution text) from a GSM8K `answer` field ("... #### 18")."""
    worked, _, gold_text = answer_field.rpartition(_GSM8K_ANSWER_MARKER)
    gold = clean_gold_number(gold_text)
    if not gold:
        raise RowError(f"nothing after {_GSM8K_ANSWER_MARKER!r} in field 'answer'")
    return gold, gsm8k_solution_text(worked, gold)


class NumericAnswerTask(Task):
    """Base for tasks whose answer is one number: "The answer is N." and verify_numeric."""

    answer_instruction = 'End with a line of the form "The answer is N." where N is a number.'

    def extract_answer(self, text: str) -> str | None:
        return numeric_final_answer(text)

    def answers_match(self, predicted: str, gold: str) -> bool:
        from mcts_po.verifiers import verify_numeric

        return verify_numeric(predicted, gold)


class GSM8KTask(NumericAnswerTask):
    """GSM8K (or any file in its format); with `name="demo"` the bundled demo problems."""

    def __init__(self, name: str = "gsm8k", default_path: str | Path | None = None,
                 hub_config: str | None = GSM8K_HUB_CONFIG, id_prefix: str | None = None):
        self.name = name
        self.default_path = default_path
        self.hub_config = hub_config
        self.id_prefix = id_prefix or name
        self.last_load_skipped = 0
        self.last_load_source: str | None = None

    def load(self, split: str = "test", limit: int | None = None, path: str | Path | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        if options:
            from mcts_po.io_utils import UserError

            raise UserError(f"{self.name}.load() got unknown option(s): {', '.join(sorted(options))}")
        path = path if path is not None else self.default_path
        if path is None:
            path = GSM8K_HUB_ID
        source = resolve_source(path, split, [f"{split}.jsonl", f"gsm8k/{split}.jsonl"],
                                hub_config=self.hub_config)

        def parse_row(row: dict[str, Any], row_index: int) -> Problem:
            return self.parse_row(row, row_index, split)

        return load_problems(self, source, parse_row, offset=offset, limit=limit,
                             skip_bad_lines=skip_bad_lines)

    def parse_row(self, row: dict[str, Any], row_index: int, split: str) -> Problem:
        """One GSM8K-format row -> Problem. `answer` either ends in `#### N` (GSM8K; the
        text before it becomes the solution) or is the answer itself (then `solution`
        is read from its own field when present)."""
        question = required_text(row, "question")
        answer_field = required_text(row, "answer")
        if _GSM8K_ANSWER_MARKER in answer_field:
            gold, solution = split_gsm8k_answer(answer_field)
        else:
            gold, solution = clean_gold_number(answer_field), optional_text(row, "solution")
        problem_id = optional_text(row, "id") or f"{self.id_prefix}-{split}-{row_index:05d}"
        return Problem(id=problem_id, question=question, answer=gold, solution=solution,
                       meta={"task": self.name, "split": split, "row_index": row_index})


def repo_data_dir() -> Path:
    """The repository's `data/` folder (beside the `mcts_po` package)."""
    import mcts_po

    return Path(mcts_po.__file__).resolve().parents[1] / "data"


DEMO_PROBLEMS_FILE = "demo_problems.jsonl"


class DemoTask(GSM8KTask):
    """The bundled demo problems (`data/demo_problems.jsonl`): grade-school word problems
    written for this project, in the GSM8K-style answer format. One set; `split` only
    labels the problems."""

    def __init__(self, default_path: str | Path | None = None):
        super().__init__(name="demo", default_path=default_path or repo_data_dir() / DEMO_PROBLEMS_FILE,
                         hub_config=None, id_prefix="demo")

    def load(self, split: str = "test", limit: int | None = None, path: str | Path | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        if path is None and not Path(self.default_path).is_file():
            from mcts_po.io_utils import UserError

            raise UserError(
                f"the demo problems file is missing: {self.default_path} (it ships in the repository's "
                "data/ folder; run from a source checkout, or pass path=... / use --task gsm8k or jsonl)")
        return super().load(split, limit=limit, path=path, offset=offset,
                            skip_bad_lines=skip_bad_lines, **options)
