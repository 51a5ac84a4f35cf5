"""The MATH task (Hendrycks et al. competition math), including MATH-500.

(The file is not called `math.py` so that it never shadows the standard library.)

Rows have `problem`, `solution` (answer in `\\boxed{}`) and, for MATH-500, `answer`,
`subject`, `level` and `unique_id`. Sources: a JSONL file; a folder, where split "test" or
"math500" reads `math500.jsonl`, split "train" reads `train4500.jsonl` (the 4,500 MATH
test problems outside MATH-500, the PRM800K convention) and any split also accepts
`{split}.jsonl` (each also under `math/`); or a hub id. Without a path, "test"/"math500"
load `HuggingFaceH4/MATH-500` and other splits `DigitalLearningGmbH/MATH-lighteval`.
The task option `levels` (`get_task("math", levels=[1, 2])`, `task_options: {levels: [1, 2]}`)
keeps only problems of those levels ("Level N" and N both count), before `offset`/`limit`.

The model is asked to put the final answer in `\\boxed{}` and end with
"The answer is \\boxed{...}."; `extract_answer` takes the last `\\boxed{}` (else the text
after "The answer is"), and `answers_match` is `mcts_po.verifiers.verify_math`.

    from mcts_po.tasks import get_task
    task = get_task("math")
    problems = task.load("math500", limit=5, path="../shared/data/math")
    task.is_correct("So $r = 3$.\\n\\nThe answer is \\\\boxed{3}.", problems[0])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcts_po.tasks.base import Problem, Task
from mcts_po.tasks.gsm8k import final_answer_tail
from mcts_po.tasks.loading import (RowError, load_problems, optional_text, required_text, resolve_source,
                                   slice_problems)
from mcts_po.verifiers.answers import MATH_DELIMITERS

MATH500_HUB_ID = "HuggingFaceH4/MATH-500"
MATH_TRAIN_HUB_ID = "DigitalLearningGmbH/MATH-lighteval"
MATH500_SPLITS = ("test", "math500")


# Markdown emphasis around a stated answer: "The answer is **7**." (SmolLM2 writes it).
_MARKDOWN_EMPHASIS = re.compile(r"^(\*\*|\*|__)(?P<inner>.+?)\1")
# The end of the stated answer's sentence in plain text: a full stop followed by whitespace
# ("7. The student..."); a decimal point ("3.5") is not followed by whitespace.
_SENTENCE_END = re.compile(r"\.(?=\s)")


def stated_answer(tail: str) -> str | None:
    """The answer at the start of what follows "The answer is": markdown emphasis removed, the
    first inline math group if the tail opens with one (`$6.3$. The student...` -> `6.3`), else
    the text up to the end of its sentence (`7. Next...` -> `7`), without a final full stop.
    None when nothing is left."""
    answer, in_math = tail.strip(), False
    for _ in range(2):  # "**$6.3$**" and "$**6.3**$" both peel to 6.3
        emphasis = _MARKDOWN_EMPHASIS.match(answer)
        if emphasis is not None:
            answer = emphasis.group("inner").strip()
        for opener, closer in MATH_DELIMITERS:
            if answer.startswith(opener):
                end = answer.find(closer, len(opener))
                answer = answer[len(opener):] if end < 0 else answer[len(opener):end]  # unclosed: the rest
                answer, in_math = answer.strip(), True
                break
    if not in_math:
        sentence_end = _SENTENCE_END.search(answer)
        if sentence_end is not None:
            answer = answer[:sentence_end.start()]
    answer = answer.strip().rstrip(".").strip()
    return answer or None


def math_final_answer(text: str) -> str | None:
    """The final answer stated in `text`: the content of the last `\\boxed{}`, else the
    answer after the last "The answer is" on its line (`stated_answer`: the first inline math
    group or the rest of the sentence, markdown emphasis removed); None when the text states
    none (or its box is cut off)."""
    if not isinstance(text, str):
        return None
    from mcts_po.verifiers import extract_boxed

    boxed = extract_boxed(text)
    if boxed:
        return boxed
    tail = final_answer_tail(text)
    if tail is None or "\\boxed" in tail or "\\fbox" in tail:  # no phrase, or an unclosed box
        return None
    return stated_answer(tail)


def normalize_level(level: Any) -> Any:
    """MATH levels as integers: 3 and "Level 3" -> 3; anything else ("Level ?") unchanged."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    match = re.fullmatch(r"\s*(?:Level\s*)?(\d+)\s*", str(level))
    return int(match.group(1)) if match else level


def parse_levels(levels: Any) -> tuple[int, ...] | None:
    """The `levels` task option as sorted unique integers: None/[] -> None (all levels); 2 ->
    (2,); [1, "Level 2"] -> (1, 2); "1,2" -> (1, 2). Anything else raises UserError."""
    from mcts_po.io_utils import UserError

    if levels is None:
        return None
    items = levels.split(",") if isinstance(levels, str) else levels
    if isinstance(items, (int, str)) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise UserError(f"math task option 'levels' must be a level or a list of levels (1-5), got {levels!r}")
    parsed = set()
    for item in items:
        level = normalize_level(item) if not isinstance(item, bool) else item
        if not isinstance(level, int) or isinstance(level, bool) or level < 1:
            raise UserError(f"math task option 'levels': {item!r} is not a level (an integer >= 1 or 'Level N')")
        parsed.add(level)
    return tuple(sorted(parsed)) or None


def math_source_names(split: str) -> list[str]:
    """File names tried, in order, when the path is a folder."""
    if split in MATH500_SPLITS:
        names = ["math500.jsonl", f"{split}.jsonl"]
    elif split == "train":
        names = ["train4500.jsonl", "train.jsonl"]
    else:
        names = [f"{split}.jsonl"]
    return names + [f"math/{name}" for name in names]


class BoxedAnswerTask(Task):
    """Base for tasks with LaTeX answers in `\\boxed{}`, checked by verify_math."""

    answer_instruction = ('Put the final answer in \\boxed{} and end with a line of the form '
                          '"The answer is \\boxed{ANSWER}."')
    worked_example = (
        "What is the value of $x$ if $3x + 5 = 20$?",
        "Subtract 5 from both sides: $3x = 15$.\nDivide both sides by 3: $x = 5$.\nThe answer is \\boxed{5}.",
    )
    verify_timeout_s: float = 5.0

    def extract_answer(self, text: str) -> str | None:
        return math_final_answer(text)

    def answers_match(self, predicted: str, gold: str) -> bool:
        from mcts_po.verifiers import verify_math

        return verify_math(predicted, gold, timeout=self.verify_timeout_s)


class MathTask(BoxedAnswerTask):
    """MATH / MATH-500 problems."""

    name = "math"

    def __init__(self, hub_config: str | None = None, verify_timeout_s: float = 5.0,
                 levels: Any = None):
        self.hub_config = hub_config
        self.verify_timeout_s = float(verify_timeout_s)
        self.levels = parse_levels(levels)
        self.last_load_skipped = 0
        self.last_load_source: str | None = None

    def load(self, split: str = "test", limit: int | None = None, path: str | Path | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        if options:
            from mcts_po.io_utils import UserError

            raise UserError(f"math.load() got unknown option(s): {', '.join(sorted(options))}")
        hub_split = "test" if split in MATH500_SPLITS else split
        if path is None:
            path = MATH500_HUB_ID if split in MATH500_SPLITS else MATH_TRAIN_HUB_ID
        source = resolve_source(path, split, math_source_names(split),
                                hub_config=self.hub_config, hub_split=hub_split)

        def parse_row(row: dict[str, Any], row_index: int) -> Problem:
            return self.parse_row(row, row_index, split)

        if self.levels is None:
            return load_problems(self, source, parse_row, offset=offset, limit=limit,
                                 skip_bad_lines=skip_bad_lines)
        # the level filter comes before offset/limit: `limit 10` means 10 problems of these levels
        problems = load_problems(self, source, parse_row, skip_bad_lines=skip_bad_lines)
        kept = [p for p in problems if p.meta.get("level") in self.levels]
        if not kept:
            from mcts_po.io_utils import UserError

            found = sorted({str(p.meta.get("level")) for p in problems})
            raise UserError(f"math: no problems of level(s) {', '.join(map(str, self.levels))} in "
                            f"{source.describe()} (levels present: {', '.join(found) or 'none'})")
        return slice_problems(kept, offset, limit)

    def parse_row(self, row: dict[str, Any], row_index: int, split: str) -> Problem:
        """One MATH row -> Problem; gold = `answer` if present, else the last `\\boxed{}`
        of `solution`; id = `unique_id` (MATH-500), else `id`, else math-{split}-{index}."""
        from mcts_po.verifiers import extract_boxed

        question = required_text(row, "problem", alternatives=("question",))
        solution = optional_text(row, "solution")
        gold = optional_text(row, "answer")
        if not gold:
            if not solution:
                raise RowError("missing field 'answer' and field 'solution' (one must hold the answer)")
            gold = extract_boxed(solution) or ""
            if not gold:
                raise RowError("no field 'answer' and no \\boxed{...} answer in field 'solution'")
        problem_id = (optional_text(row, "unique_id") or optional_text(row, "id")
                      or f"math-{split}-{row_index:05d}")
        meta: dict[str, Any] = {"task": self.name, "split": split, "row_index": row_index}
        subject = row.get("subject", row.get("type"))
        if subject is not None:
            meta["subject"] = subject
        if row.get("level") is not None:
            meta["level"] = normalize_level(row["level"])
        return Problem(id=problem_id, question=question, answer=gold, solution=solution, meta=meta)
