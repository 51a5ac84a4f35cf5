"""Tests of the synthetic `arithmetic` task (mcts_po.tasks.arithmetic): seeded
reproducibility, disjoint train/test splits, answers recomputed independently from the
question text, and the difficulty knobs.

    cd /work/main && PYTHONPATH=. .venv/bin/pytest tests/test_arithmetic.py -q
"""

from __future__ import annotations

import operator
import random
import re
from fractions import Fraction

import pytest

from mcts_po.io_utils import UserError
from mcts_po.tasks import get_task
from mcts_po.tasks.arithmetic import THEMES
from mcts_po.tasks.base import STEP_DELIMITER

PYTHON_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def numbers_in(text: str) -> list[int]:
    return [int(number) for number in re.findall(r"\d+", text)]


def test_same_options_give_the_same_problems():
    first = get_task("arithmetic", num_ops=3, max_value=50, seed=7).load("test", limit=200)
    second = get_task("arithmetic", num_ops=3, max_value=50, seed=7).load("test", limit=200)
    assert [problem.to_dict() for problem in first] == [problem.to_dict() for problem in second]


def test_different_seeds_give_different_problems():
    seed0 = get_task("arithmetic", seed=0).load("test", limit=50)
    seed1 = get_task("arithmetic", seed=1).load("test", limit=50)
    assert [p.question for p in seed0] != [p.question for p in seed1]
    assert seed1[0].id == "arith-ops3-max50-s1-test-00000"


def test_global_random_state_is_untouched():
    state = random.getstate()
    get_task("arithmetic", seed=3).load("train", limit=100)
    assert random.getstate() == state


def test_ids_and_offset_limit_slices():
    task = get_task("arithmetic", num_ops=3, max_value=50, seed=0)
    everything = task.load("test", limit=15)
    assert everything[7].id == "arith-ops3-max50-s0-test-00007"
    window = task.load("test", offset=5, limit=10)
    assert [p.to_dict() for p in window] == [p.to_dict() for p in everything[5:]]
    assert len(task.load("train")) == 1000  # default limit
    assert len({p.id for p in task.load("train")}) == 1000


@pytest.mark.parametrize("options", [dict(num_ops=3, max_value=50), dict(num_ops=1, max_value=12)])
def test_train_and_test_never_share_a_problem(options):
    task = get_task("arithmetic", seed=0, **options)
    test_limit, train_limit = (1000, 3000) if options["num_ops"] > 1 else (30, 100)
    train = task.load("train", limit=train_limit)
    test = task.load("test", limit=test_limit)
    assert not {p.question for p in train} & {p.question for p in test}

    def numbers_and_operations(problem):
        return tuple(numbers_in(problem.question)), tuple(symbol for symbol, _ in problem.meta["operations"])

    train_keys = {numbers_and_operations(p) for p in train}
    test_keys = {numbers_and_operations(p) for p in test}
    assert not train_keys & test_keys
    # and within a split there are no repeats
    assert len(test_keys) == len(test) and len(train_keys) == len(train)


def test_answers_recomputed_from_the_question_text():
    task = get_task("arithmetic", num_ops=4, max_value=40, seed=11)
    for problem in task.load("test", limit=300):
        numbers = numbers_in(problem.question)
        symbols = [symbol for symbol, _ in problem.meta["operations"]]
        assert len(numbers) == len(symbols) + 1, problem.question
        value = Fraction(numbers[0])
        for symbol, operand in zip(symbols, numbers[1:]):
            value = PYTHON_OPERATORS[symbol](value, Fraction(operand))
            assert value.denominator == 1 and value > 0, f"{problem.id}: intermediate {value}"
        assert str(int(value)) == problem.answer, problem.id
        assert task.is_correct(problem.solution, problem)
        assert problem.solution.split(STEP_DELIMITER)[-1] == f"The answer is {problem.answer}."


def test_every_solution_step_is_one_correct_equation():
    task = get_task("arithmetic", num_ops=3, seed=2)
    for problem in task.load("train", limit=100):
        steps = problem.solution.split(STEP_DELIMITER)[:-1]
        for step in steps:
            left, symbol, right, result = re.search(r"(\d+) ([-+*/]) (\d+) = (\d+)", step).groups()
            assert PYTHON_OPERATORS[symbol](Fraction(left), Fraction(right)) == int(result), step
            assert not task.has_final_answer(step)


@pytest.mark.parametrize("num_ops", [1, 2, 5])
def test_num_ops_sets_the_number_of_operations(num_ops):
    task = get_task("arithmetic", num_ops=num_ops, max_value=30, seed=0)
    for problem in task.load("test", limit=50):
        assert len(problem.meta["operations"]) == num_ops
        assert len(numbers_in(problem.question)) == num_ops + 1
        assert len(problem.solution.split(STEP_DELIMITER)) == num_ops + 1
        assert problem.id.startswith(f"arith-ops{num_ops}-max30-s0-test-")


def test_max_value_operations_and_variety_knobs():
    task = get_task("arithmetic", num_ops=3, max_value=9, max_factor=3, operations="+*", variety=1, seed=5)
    problems = task.load("test", limit=100)
    for problem in problems:
        assert 2 <= problem.meta["start"] <= 9
        assert {symbol for symbol, _ in problem.meta["operations"]} <= {"+", "*"}
        assert all(operand <= 9 for symbol, operand in problem.meta["operations"] if symbol == "+")
        assert all(operand <= 3 for symbol, operand in problem.meta["operations"] if symbol == "*")
        assert problem.meta["theme"] == "apples" and "apples" in problem.question
    every_theme = get_task("arithmetic", seed=5).load("test", limit=200)
    assert {problem.meta["theme"] for problem in every_theme} == {theme.key for theme in THEMES}


def test_division_only_is_exact():
    task = get_task("arithmetic", num_ops=2, max_value=200, max_factor=5, operations="/", seed=1)
    for problem in task.load("test", limit=30):
        value = problem.meta["start"]
        for _, divisor in problem.meta["operations"]:
            assert value % divisor == 0
            value //= divisor
        assert str(value) == problem.answer


def test_bad_knobs_and_arguments_are_user_errors():
    with pytest.raises(UserError, match="num_ops must be an integer >= 1"):
        get_task("arithmetic", num_ops=0)
    with pytest.raises(UserError, match="variety must be an integer from 1 to 5"):
        get_task("arithmetic", variety=9)
    with pytest.raises(UserError, match="operations must be a non-empty string"):
        get_task("arithmetic", operations="+^")
    with pytest.raises(UserError, match="takes no path"):
        get_task("arithmetic").load(path="problems.jsonl")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        get_task("arithmetic").load("dev")


def test_asking_for_more_problems_than_exist_is_a_user_error():
    task = get_task("arithmetic", num_ops=1, max_value=3, max_factor=2, operations="+", seed=0)
    with pytest.raises(UserError, match="could only make"):
        task.load("test", limit=50)
