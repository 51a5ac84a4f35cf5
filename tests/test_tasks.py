"""Tests of the task plugins (mcts_po.tasks): registry, loading GSM8K/MATH/JSONL sources,
malformed-input errors naming file and line, answer extraction, and the demo problems.

    cd /work/main && PYTHONPATH=. .venv/bin/pytest tests/test_tasks.py -q

Tests that read the GSM8K/MATH copies in ../shared/data skip when that folder is absent.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import types
from pathlib import Path

import pytest

import mcts_po
from mcts_po.io_utils import InputError, UserError
from mcts_po.tasks import get_task, list_tasks, register_task
from mcts_po.tasks.base import STEP_DELIMITER, Problem, Task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file(),
                                       reason=f"GSM8K/MATH copies not found in {SHARED_DATA}")
DEMO_FILE = Path(mcts_po.__file__).resolve().parents[1] / "data" / "demo_problems.jsonl"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def gsm8k_row(question: str = "Ann has 2 apples and buys 3. How many?", answer: str = "2 + 3 = <<2+3=5>>5\n#### 5") -> str:
    return json.dumps({"question": question, "answer": answer})


# ------------------------------------------------------------------------------- registry

def test_list_tasks_names_every_builtin_task():
    assert list_tasks() == ["arithmetic", "demo", "gsm8k", "jsonl", "math"]


def test_unknown_task_name_lists_valid_names():
    with pytest.raises(UserError) as error:
        get_task("gsm9k")
    message = str(error.value)
    assert "'gsm9k'" in message
    for name in ("arithmetic", "demo", "gsm8k", "jsonl", "math"):
        assert name in message


def test_unknown_option_lists_valid_options():
    with pytest.raises(UserError) as error:
        get_task("arithmetic", num_opz=3)
    assert "num_opz" in str(error.value) and "num_ops" in str(error.value)


def test_default_task_is_demo():
    assert get_task().name == "demo"
    assert get_task(None).name == "demo"


def test_register_task_adds_a_name():
    class OneProblemTask(Task):
        name = "one"

        def load(self, split="test", limit=None, path=None, offset=0, **options):
            return [Problem("one-0", "1 + 1?", "2")]

    register_task("one-problem", OneProblemTask)
    try:
        assert "one-problem" in list_tasks()
        assert get_task("one-problem").load()[0].answer == "2"
    finally:
        from mcts_po import tasks
        tasks.TASKS.pop("one-problem")


# ------------------------------------------------------------------- real GSM8K and MATH

@needs_shared_data
def test_gsm8k_test_file_loads_1319_problems_with_unique_ids():
    task = get_task("gsm8k")
    problems = task.load("test", path=str(SHARED_DATA / "gsm8k"))
    assert len(problems) == 1319
    assert len({problem.id for problem in problems}) == 1319
    assert all(problem.answer and "," not in problem.answer for problem in problems)
    assert problems[12].id == "gsm8k-test-00012"
    # The first problem, checked against its own raw line (no data text is written into this file):
    # question kept, calculator annotations dropped, "#### X" rewritten as the final-answer sentence.
    raw = json.loads((SHARED_DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    first = problems[0]
    raw_reasoning, raw_final = raw["answer"].split("####")
    assert first.question == raw["question"].strip()
    assert first.answer == raw_final.strip().replace(",", "")
    expected_lines = [re.sub(r"<<[^>]*>>", "", line).strip() for line in raw_reasoning.strip().splitlines()]
    assert first.solution.splitlines() == expected_lines + [f"The answer is {first.answer}."]
    assert "<<" not in first.solution and "####" not in first.solution
    assert task.last_load_skipped == 0


@needs_shared_data
def test_gsm8k_folder_parent_folder_and_file_give_the_same_problems():
    task = get_task("gsm8k")
    from_file = task.load("test", limit=3, path=str(SHARED_DATA / "gsm8k" / "test.jsonl"))
    from_folder = task.load("test", limit=3, path=str(SHARED_DATA / "gsm8k"))
    from_parent = task.load("test", limit=3, path=str(SHARED_DATA))
    assert [p.to_dict() for p in from_file] == [p.to_dict() for p in from_folder] == [p.to_dict() for p in from_parent]
    train = task.load("train", limit=2, path=str(SHARED_DATA / "gsm8k"))
    assert train[1].id == "gsm8k-train-00001"


@needs_shared_data
def test_gsm8k_offset_and_limit_keep_source_ids():
    task = get_task("gsm8k")
    problems = task.load("test", offset=10, limit=5, path=str(SHARED_DATA / "gsm8k"))
    assert [problem.id for problem in problems] == [f"gsm8k-test-{index:05d}" for index in range(10, 15)]
    assert task.load("test", offset=1318, limit=5, path=str(SHARED_DATA / "gsm8k"))[0].id == "gsm8k-test-01318"


@needs_shared_data
def test_every_gsm8k_reference_solution_verifies():
    task = get_task("gsm8k")
    problems = task.load("test", path=str(SHARED_DATA / "gsm8k"))
    failures = [problem.id for problem in problems
                if not (task.extract_answer(problem.solution) is not None
                        and task.answers_match(task.extract_answer(problem.solution), problem.answer)
                        and task.is_correct(problem.solution, problem))]
    assert failures == [], f"{len(failures)} of 1319 reference solutions do not verify: {failures[:10]}"
    # And the intermediate steps are not mistaken for final answers.
    steps = problems[0].solution.split(STEP_DELIMITER)
    assert [task.has_final_answer(step) for step in steps] == [False, False, True]


@needs_shared_data
def test_math500_loads_500_with_unique_ids_and_gold_answers():
    task = get_task("math")
    problems = task.load("math500", path=str(SHARED_DATA / "math"))
    assert len(problems) == 500
    assert len({problem.id for problem in problems}) == 500
    assert problems[0].id == "test/precalculus/807.json"
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert problems[0].meta["level"] == 2 and problems[0].meta["subject"] == "Precalculus"
    assert all(problem.answer for problem in problems)
    # "test" is the same set as "math500"; the parent folder works too.
    assert [p.id for p in task.load("test", limit=4, path=str(SHARED_DATA))] == [p.id for p in problems[:4]]


@needs_shared_data
def test_math_train4500_takes_gold_answers_from_boxed():
    task = get_task("math")
    problems = task.load("train", path=str(SHARED_DATA / "math"))
    assert len(problems) == 4500
    assert len({problem.id for problem in problems}) == 4500
    assert problems[0].id == "math-train-00000"
    assert problems[0].answer == "2"  # "... the graph has $\boxed{2}$ vertical asymptotes."
    assert problems[1].answer == "10"
    assert problems[0].meta["level"] == 3 and problems[0].meta["subject"] == "Algebra"
    assert all(problem.answer and "\\boxed" not in problem.answer for problem in problems)


@needs_shared_data
def test_math_levels_option_filters_before_offset_and_limit():
    everything = get_task("math").load("math500", path=str(SHARED_DATA / "math"))
    low = [p for p in everything if p.meta["level"] in (1, 2)]
    assert len(low) == 133  # MATH-500: 43 of level 1, 90 of level 2
    task = get_task("math", levels=[2, 1])
    assert task.levels == (1, 2)
    assert [p.id for p in task.load("math500", path=str(SHARED_DATA / "math"))] == [p.id for p in low]
    # offset/limit count problems of those levels only, and keep the file's order
    sliced = task.load("math500", path=str(SHARED_DATA / "math"), offset=3, limit=5)
    assert [p.id for p in sliced] == [p.id for p in low[3:8]]
    # train4500 spells levels "Level N"; the option takes either spelling
    train = get_task("math", levels="Level 1").load("train", path=str(SHARED_DATA / "math"), limit=20)
    assert len(train) == 20 and {p.meta["level"] for p in train} == {1}


def test_math_levels_option_spellings_and_errors(tmp_path):
    from mcts_po.tasks.competition_math import parse_levels

    assert parse_levels(None) is None and parse_levels([]) is None
    assert parse_levels(3) == (3,) and parse_levels("1,2") == (1, 2) and parse_levels(["Level 2", 1, 2]) == (1, 2)
    for bad in ("hard", [0], [True], {"a": 1}, 2.5):
        with pytest.raises(UserError, match="levels"):
            get_task("math", levels=bad)
    path = write_lines(tmp_path / "math.jsonl", [json.dumps({"problem": "1+1?", "answer": "2", "level": "Level 3"})])
    with pytest.raises(UserError, match=r"no problems of level\(s\) 1.*levels present: 3"):
        get_task("math", levels=[1]).load(path=str(path))
    assert [p.meta["level"] for p in get_task("math", levels=[3]).load(path=str(path))] == [3]


@needs_shared_data
def test_math500_reference_solutions_state_their_gold_answer():
    """The last \\boxed{} of each MATH-500 solution verifies against its `answer` field."""
    task = get_task("math")
    problems = task.load("math500", path=str(SHARED_DATA / "math"))
    failures = [problem.id for problem in problems if not task.is_correct(problem.solution, problem)]
    assert failures == [], f"{len(failures)} of 500 reference solutions do not verify: {failures[:10]}"


# ------------------------------------------------------------------------ answer extraction

@pytest.mark.parametrize("text, expected", [
    ("The answer is 18.", "18"),
    ("So she makes 9 * 2 = 18 dollars.\n\nThe answer is $18.", "18"),
    ("The answer is 1,000.", "1000"),
    ("The answer is -7.", "-7"),
    ("The answer is 3.5 hours.", "3.5"),
    ("Therefore, the final answer is: 42", "42"),
    ("The answer is 9 * 2 = 18.", "18"),
    ("The answer is 12 apples, and 3 are left over.", "12"),
    ("The answer is 5.\n\nNo wait, the answer is 6.", "6"),
    ("She has 12 apples.\nSo \\boxed{12}", "12"),
    ("The answer is \\boxed{\\$25}.", "25"),
    ("The answer is twelve.", "twelve"),
    ("She sells 16 - 3 - 4 = 9 eggs.", None),
    ("First we find the answer to part one: 5 + 3 = 8.", None),
    ("The answer is", None),
    ("The answer is \\boxed{1", None),
    ("", None),
])
def test_numeric_extract_answer(text, expected):
    task = get_task("gsm8k")
    assert task.extract_answer(text) == expected
    assert task.has_final_answer(text) is (expected is not None)


@pytest.mark.parametrize("text, expected", [
    ("So $x = 3$.\n\nThe answer is \\boxed{3}.", "3"),
    ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("First \\boxed{1}, then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("The answer is 7", "7"),
    # what SmolLM2 writes after the phrase: text after the closing `$`, markdown bold, a next sentence
    ("The answer is $6.3$. The student should check the units.", "6.3"),
    ("The answer is **7**.", "7"),
    ("The answer is **$\\frac{1}{2}$**.", "\\frac{1}{2}"),
    ("The answer is 3.5. Next, we check.", "3.5"),
    ("The answer is 12 apples. So she has more.", "12 apples"),
    ("We factor $x^2 - 1 = (x-1)(x+1)$.", None),
    ("The answer is \\boxed{\\frac{1}{2}", None),
    ("The answer is", None),
])
def test_math_extract_answer(text, expected):
    task = get_task("math")
    assert task.extract_answer(text) == expected
    assert task.has_final_answer(text) is (expected is not None)


def test_is_correct_and_reward_for_numeric_task():
    task = get_task("gsm8k")
    problem = Problem("p", "q", "1000")
    assert task.is_correct("She has 1,000 beads.\n\nThe answer is 1,000.", problem)
    assert task.reward("The answer is $1000.00.", problem) == 1.0
    assert task.reward("The answer is 999.", problem) == -1.0
    assert not task.is_correct("She has 1000 beads.", problem)  # no final answer stated


def test_is_correct_for_math_task():
    task = get_task("math")
    problem = Problem("p", "q", "\\frac{1}{2}")
    assert task.is_correct("The answer is \\boxed{\\dfrac{1}{2}}.", problem)
    assert task.is_correct("The answer is \\boxed{0.5}.", problem)
    assert not task.is_correct("The answer is \\boxed{\\frac{1}{3}}.", problem)
    assert task.is_correct("The answer is **$\\frac{1}{2}$**. We are done.", problem)
    assert not task.is_correct("The answer is $\\frac{1}{3}$. The student said 1/2.", problem)


def test_messages_hold_question_and_answer_format():
    problem = Problem("p", "  What is 2 + 2?  ", "4")
    numeric = get_task("gsm8k").messages(problem)
    # system (format), one worked example exchange, then the question itself
    assert [message["role"] for message in numeric] == ["system", "user", "assistant", "user"]
    assert numeric[-1]["content"] == "What is 2 + 2?"
    assert "The answer is N." in numeric[0]["content"]
    assert "own line" in numeric[0]["content"]
    example_steps = numeric[2]["content"].split(STEP_DELIMITER)
    assert len(example_steps) == 3 and example_steps[-1] == "The answer is 9."
    assert get_task("gsm8k").is_correct(numeric[2]["content"], Problem("ex", numeric[1]["content"], "9"))
    math_messages = get_task("math").messages(problem)
    assert "\\boxed{}" in math_messages[0]["content"]
    assert "The answer is \\boxed{ANSWER}." in math_messages[0]["content"]
    assert get_task("math").is_correct(math_messages[2]["content"], Problem("ex", "x?", "5"))
    plain = get_task("math").prompt(problem)
    assert plain.endswith("Question: What is 2 + 2?\nAnswer:\n")
    assert plain.count("Question:") == 2


# ------------------------------------------------------------------------- malformed input

def test_broken_json_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "broken.jsonl", [gsm8k_row(), gsm8k_row(), '{"question": "x", "answer": '])
    with pytest.raises(InputError) as error:
        get_task("gsm8k").load(path=str(path))
    assert error.value.line == 3
    assert f"{path}:3" in str(error.value) and "invalid JSON" in str(error.value)


def test_missing_question_field_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "no_question.jsonl",
                       [gsm8k_row(), json.dumps({"prompt": "x", "answer": "#### 4"}), gsm8k_row()])
    with pytest.raises(InputError) as error:
        get_task("gsm8k").load(path=str(path))
    assert f"{path}:2" in str(error.value)
    assert "missing field 'question'" in str(error.value)


def test_missing_answer_field_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "no_answer.jsonl", [gsm8k_row(), "", json.dumps({"question": "x"})])
    with pytest.raises(InputError) as error:
        get_task("gsm8k").load(path=str(path))
    assert f"{path}:3" in str(error.value)  # blank lines still count
    assert "missing field 'answer'" in str(error.value)


def test_empty_gsm8k_answer_after_marker_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty_gold.jsonl", [gsm8k_row(answer="2 + 3 = 5\n####  ")])
    with pytest.raises(InputError, match=r"empty_gold\.jsonl:1: nothing after '####'"):
        get_task("gsm8k").load(path=str(path))


def test_empty_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        get_task("gsm8k").load(path=str(path))
    assert str(path) in str(error.value) and "empty" in str(error.value)


def test_math_row_without_answer_or_box_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "math.jsonl", [
        json.dumps({"problem": "1+1?", "solution": "It is $\\boxed{2}$."}),
        json.dumps({"problem": "2+2?", "solution": "It is 4."}),
    ])
    with pytest.raises(InputError) as error:
        get_task("math").load(path=str(path))
    assert f"{path}:2" in str(error.value) and "\\boxed" in str(error.value)


def test_row_that_is_not_an_object_and_duplicate_ids_are_errors(tmp_path):
    not_object = write_lines(tmp_path / "list.jsonl", [gsm8k_row(), "[1, 2]"])
    with pytest.raises(InputError, match=r"list\.jsonl:2: expected a JSON object, got list"):
        get_task("gsm8k").load(path=str(not_object))
    duplicates = write_lines(tmp_path / "dup.jsonl", [
        json.dumps({"id": "a", "question": "q", "answer": "1"}),
        json.dumps({"id": "b", "question": "q", "answer": "1"}),
        json.dumps({"id": "a", "question": "q", "answer": "1"}),
    ])
    with pytest.raises(InputError, match=r"dup\.jsonl:3: duplicate problem id 'a' \(first on line 1\)"):
        get_task("gsm8k").load(path=str(duplicates))


def test_skip_bad_lines_skips_counts_and_warns(tmp_path, caplog):
    path = write_lines(tmp_path / "mixed.jsonl", [
        gsm8k_row(), "{not json", json.dumps({"question": "no answer"}), gsm8k_row(), '"a string"',
    ])
    task = get_task("gsm8k")
    with caplog.at_level(logging.WARNING, logger="mcts_po.tasks.loading"):
        problems = task.load(path=str(path), skip_bad_lines=True)
    assert [problem.id for problem in problems] == ["gsm8k-test-00000", "gsm8k-test-00003"]
    assert task.last_load_skipped == 3
    warnings = "\n".join(record.getMessage() for record in caplog.records)
    assert f"{path}:2" in warnings and f"{path}:3" in warnings and f"{path}:5" in warnings
    assert "skipped 3 bad line(s)" in warnings
    # A clean load resets the count.
    task.load(path=str(write_lines(tmp_path / "clean.jsonl", [gsm8k_row()])))
    assert task.last_load_skipped == 0


def test_skip_bad_lines_with_no_good_line_left_is_an_error(tmp_path):
    path = write_lines(tmp_path / "all_bad.jsonl", ["{", json.dumps({"question": "x"})])
    with pytest.raises(InputError, match=r"all_bad\.jsonl: no usable problems \(2 bad line\(s\) skipped\)"):
        get_task("gsm8k").load(path=str(path), skip_bad_lines=True)


def test_missing_path_and_folder_without_split_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        get_task("gsm8k").load(path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match=r"no file for split 'dev'.*dev\.jsonl, gsm8k/dev\.jsonl"):
        get_task("gsm8k").load("dev", path=str(tmp_path))


def test_negative_offset_or_limit_is_a_user_error(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", [gsm8k_row()])
    with pytest.raises(UserError, match="offset must be >= 0"):
        get_task("gsm8k").load(path=str(path), offset=-1)
    with pytest.raises(UserError, match="limit must be >= 0"):
        get_task("gsm8k").load(path=str(path), limit=-2)


# ------------------------------------------------------------------------------- hub ids

@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path not in ("openai/gsm8k", "HuggingFaceH4/MATH-500"):
            raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        if "MATH" in path:
            return [{"problem": "What is $1+1$?", "solution": "$\\boxed{2}$", "answer": "2",
                     "unique_id": "test/algebra/1.json"}]
        return [{"question": "Ann has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"}] * 3

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_gsm8k_hub_id_loads_with_config_main(fake_datasets):
    problems = get_task("gsm8k").load("train", path="openai/gsm8k", limit=2)
    assert fake_datasets == [("openai/gsm8k", "main", "train")]
    assert [problem.id for problem in problems] == ["gsm8k-train-00000", "gsm8k-train-00001"]
    assert problems[0].answer == "5"
    get_task("gsm8k").load()  # no path: the hub copy
    assert fake_datasets[-1] == ("openai/gsm8k", "main", "test")


def test_math_defaults_to_math500_on_the_hub(fake_datasets):
    problems = get_task("math").load("math500")
    assert fake_datasets == [("HuggingFaceH4/MATH-500", None, "test")]
    assert problems[0].id == "test/algebra/1.json" and problems[0].answer == "2"


def test_hub_failure_is_a_user_error(fake_datasets):
    with pytest.raises(UserError, match=r"could not load hub dataset broken/dataset \(hub, split test\)"):
        get_task("jsonl").load(path="broken/dataset")
    with pytest.raises(UserError, match=r"no local file or folder 'data/missing' either"):
        get_task("gsm8k").load(path="data/missing")


def test_bad_hub_row_names_dataset_and_row(monkeypatch):
    module = types.ModuleType("datasets")
    module.load_dataset = lambda path, name=None, split=None: [
        {"question": "q", "answer": "#### 1"}, {"question": "q"}]
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(InputError, match=r"^openai/gsm8k\[test\] row:2: missing field 'answer'"):
        get_task("gsm8k").load(path="openai/gsm8k")


# ---------------------------------------------------------------------------- jsonl task

def test_jsonl_task_with_user_named_fields(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [
        json.dumps({"uid": "q-1", "prompt": "What is 6 x 7?", "target": 42, "worked": "6 * 7 = 42\nThe answer is 42."}),
        json.dumps({"uid": "q-2", "prompt": "What is 1,000 + 1?", "target": "1,001"}),
    ])
    task = get_task("jsonl", question_field="prompt", answer_field="target", solution_field="worked", id_field="uid")
    problems = task.load(path=str(path))
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("q-1", "What is 6 x 7?", "42"), ("q-2", "What is 1,000 + 1?", "1001")]
    assert problems[0].solution == "6 * 7 = 42\nThe answer is 42."
    assert problems[1].solution == ""
    assert task.is_correct("The answer is 1,001.", problems[1])
    assert not task.is_correct("The answer is 1000.", problems[1])


def test_jsonl_task_default_ids_and_missing_user_field(tmp_path):
    path = write_lines(tmp_path / "algebra.jsonl", [
        json.dumps({"question": "x?", "answer": "\\boxed{\\frac{1}{2}}"}),
        json.dumps({"question": "y?", "answer": "3"}),
    ])
    task = get_task("jsonl", answer_type="math")
    problems = task.load(path=str(path))
    assert [p.id for p in problems] == ["algebra-00000", "algebra-00001"]
    assert problems[0].answer == "\\frac{1}{2}"
    assert task.is_correct("The answer is \\boxed{\\frac12}.", problems[0])
    assert "\\boxed" in task.messages(problems[0])[0]["content"]
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "train.jsonl").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert [p.id for p in task.load("train", path=str(folder))] == ["train-00000", "train-00001"]
    renamed = get_task("jsonl", question_field="prompt")
    with pytest.raises(InputError, match=r"algebra\.jsonl:1: missing field 'prompt'"):
        renamed.load(path=str(path))


def test_jsonl_task_needs_a_path_and_a_known_answer_type():
    with pytest.raises(UserError, match="needs a path"):
        get_task("jsonl").load()
    with pytest.raises(UserError, match="valid: numeric, math"):
        get_task("jsonl", answer_type="latex")


# ----------------------------------------------------------------------------------- demo

# Each demo problem's answer, computed here from its question (independently of the
# solutions in the file).
DEMO_ANSWERS = {
    "demo-001": 3 * 8 + 5, "demo-002": 4 * 3 + 2, "demo-003": 27 - 9 + 6, "demo-004": 90 - 12 * 5,
    "demo-005": 6 * 7 + 4, "demo-006": 50 - (12 + 15), "demo-007": 48 // 6 + 3, "demo-008": (3 + 2) * 7,
    "demo-009": 6 * 9 - 31, "demo-010": 15 * (4 + 3), "demo-011": 120 - 45 + 28, "demo-012": 4 * 6 - 5,
    "demo-013": 36 // 4 - 3, "demo-014": 8 * 3 - 19, "demo-015": (84 - 21) // 7, "demo-016": 3 * 60 + 15,
    "demo-017": 5 * 10 - 2 * 18, "demo-018": (30 - 2) // 4, "demo-019": 5 * 12 - 38, "demo-020": 14 + 2 * 14,
    "demo-021": 100 - 3 * 12, "demo-022": (24 + 18) // 6, "demo-023": 5 + 2 * 4, "demo-024": 3 * 24 - 7,
    "demo-025": (45 + 39) // 12, "demo-026": 80 - 6 * 5, "demo-027": 3 * (9 + 4), "demo-028": 2 * 7 * 20,
    "demo-029": (62 - 8) // 6, "demo-030": 11 + 3 * 11, "demo-031": 200 - 35 * 4, "demo-032": 2 * 12 // 3,
    "demo-033": 15 + 3 * 20, "demo-034": 7 * (25 + 35) // 60, "demo-035": 8 + (8 + 5), "demo-036": 96 // 8 - 5,
    "demo-037": 14 + (14 + 9), "demo-038": 100 - 6 * 12, "demo-039": 156 // 3 * 5, "demo-040": 2 * 3 + 3 * 4,
    "demo-041": 4 * 8 + 5 * 6, "demo-042": 15 * 4 - 47, "demo-043": 40 // 2 - 6, "demo-044": 8 * 50 // 25,
    "demo-045": 7 * 9 - 13, "demo-046": 18 * 2 + 7 * 3, "demo-047": 32 - 32 // 4, "demo-048": 90 - 25 - 38,
    "demo-049": 12 * 15 - 143, "demo-050": 5 * 9 - 12 + 7, "demo-051": 3 * 2 * 1000 // 250, "demo-052": 4 * 9 + 6,
    "demo-053": 17 + 8, "demo-054": 6 * 30,
}
_EQUATION = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*\$?(\d+)")


def _evaluate(expression: str) -> int:
    """Evaluate a + - * / expression of integers (left to right within precedence)."""
    from fractions import Fraction
    tokens = re.findall(r"\d+|[-+*/]", expression)
    terms, sign, product, operator = [], 1, Fraction(int(tokens[0])), None
    for token in tokens[1:]:
        if token in "+-*/":
            if token in "+-":
                terms.append(sign * product)
                sign, product, operator = (1 if token == "+" else -1), None, None
            else:
                operator = token
        else:
            number = Fraction(int(token))
            if product is None:
                product = number
            elif operator == "*":
                product *= number
            else:
                product /= number
    terms.append(sign * product)
    total = sum(terms)
    assert total.denominator == 1, f"{expression} is not a whole number"
    return int(total)


def test_demo_problems_load_with_unique_ids():
    task = get_task("demo")
    problems = task.load()
    assert len(problems) >= 48
    assert len({problem.id for problem in problems}) == len(problems)
    assert [problem.id for problem in problems] == sorted(DEMO_ANSWERS)
    assert all(re.fullmatch(r"\d+", problem.answer) for problem in problems)


def test_demo_answers_are_right():
    problems = get_task("demo").load()
    for problem in problems:
        assert int(problem.answer) == DEMO_ANSWERS[problem.id], problem.id


def test_demo_solutions_are_step_paragraphs_with_correct_arithmetic():
    task = get_task("demo")
    for problem in task.load():
        steps = problem.solution.split(STEP_DELIMITER)
        assert steps[-1] == f"The answer is {problem.answer}.", problem.id
        assert task.extract_answer(problem.solution) == problem.answer
        assert task.is_correct(problem.solution, problem), problem.id
        assert not any(task.has_final_answer(step) for step in steps[:-1]), problem.id
        equations = [match for step in steps[:-1] for match in _EQUATION.finditer(step)]
        assert len(equations) == len(steps) - 1, f"{problem.id}: one equation per step"
        for match in equations:
            assert _evaluate(match.group(1)) == int(match.group(2)), f"{problem.id}: {match.group(0)}"
        assert int(equations[-1].group(2)) == int(problem.answer), problem.id


def test_demo_file_fields_and_raw_rows():
    rows = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(set(row) == {"id", "question", "answer", "solution"} for row in rows)
    assert all(isinstance(row["answer"], str) for row in rows)


def test_demo_missing_file_is_a_clear_error(tmp_path):
    task = get_task("demo", default_path=str(tmp_path / "gone.jsonl"))
    with pytest.raises(UserError, match=r"demo problems file is missing: .*gone\.jsonl"):
        task.load()
