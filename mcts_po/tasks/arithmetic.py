"""The `arithmetic` task: synthetic multi-step word problems with exact integer answers.

Each problem is a short everyday story (apples, money, books, a walking route, cookies)
that starts from a number and applies `num_ops` operations to it (+, -, x and exact
division), then asks for the result. Everything comes from a seed, so a configuration
always yields the same problems:

    from mcts_po.tasks import get_task
    task = get_task("arithmetic", num_ops=3, max_value=50, seed=0)
    problems = task.load("test", limit=100)     # ids arith-ops3-max50-s0-test-00000 ...

Guarantees:
* deterministic for (options, split): each split draws from its own `random.Random`
  stream (the global RNG is never touched);
* train and test never share a problem: a problem's numbers (start and operations)
  are hashed into a split bucket, and each split keeps only problems of its bucket, so two
  splits cannot contain the same numbers even under different wording;
* answers are exact integers; intermediate values stay positive unless
  `allow_negative=True`, division always divides exactly;
* no repeated problem within a split.

Knobs: `num_ops` (operations per problem), `max_value` (largest starting value and
largest number added or subtracted), `max_factor` (largest multiplier/divisor),
`operations` (a string of "+-*/"), `variety` (how many story themes to draw from,
1..5), `max_result` (cap on any intermediate value). The prompt and answer checking are
the GSM8K ones ("The answer is N.", verify_numeric).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcts_po.io_utils import UserError
from mcts_po.tasks.base import STEP_DELIMITER, Problem
from mcts_po.tasks.gsm8k import NumericAnswerTask

OPERATION_SYMBOLS = "+-*/"
DEFAULT_LIMIT = 1000
# Share of all possible problems that belongs to each split (by a hash of the numbers).
SPLIT_BUCKETS: dict[str, tuple[float, float]] = {
    "test": (0.0, 0.2),
    "validation": (0.2, 0.3),
    "train": (0.3, 1.0),
}
NAMES = ("Mia", "Leo", "Ava", "Sam", "Nora", "Omar", "Lily", "Ben", "Zoe", "Ravi", "Elena", "Kofi")


@dataclass(frozen=True)
class StoryTheme:
    """Sentence templates of one everyday story. `{name}` is a person, `{n}` a number.
    `operations` maps each symbol to alternative wordings; `state` is the solution step
    template with `{expression}` (e.g. "12 + 5 = 17")."""

    key: str
    start: tuple[str, ...]
    operations: dict[str, tuple[str, ...]]
    question: str
    state: str


THEMES: tuple[StoryTheme, ...] = (
    StoryTheme(
        key="apples",
        start=("{name} has {n} apples.", "{name} picks {n} apples in the orchard."),
        operations={
            "+": ("{name} picks {n} more apples.", "A neighbour gives {name} {n} more apples."),
            "-": ("{name} eats {n} of the apples.", "{name} gives {n} apples to a friend."),
            "*": ("After a trade at the market, {name} has {n} times as many apples as before.",
                  "{name}'s tree gives so much fruit that {name} ends up with {n} times as many apples."),
            "/": ("{name} splits the apples equally into {n} baskets and keeps just one basket.",
                  "{name} packs the apples equally into {n} crates and keeps only one crate."),
        },
        question="How many apples does {name} have now?",
        state="{name} has {expression} apples.",
    ),
    StoryTheme(
        key="money",
        start=("{name} has ${n} in a piggy bank.", "{name} starts the month with ${n}."),
        operations={
            "+": ("{name} earns ${n} more by walking dogs.", "{name}'s aunt gives {name} another ${n}."),
            "-": ("{name} spends ${n} on a book.", "{name} pays ${n} for a concert ticket."),
            "*": ("A lucky prize makes {name}'s money {n} times as large.",
                  "{name} sells paintings and ends up with {n} times as much money as before."),
            "/": ("{name} divides the money equally into {n} envelopes and keeps only one envelope.",
                  "{name} shares the money equally among {n} jars and keeps only one jar."),
        },
        question="How many dollars does {name} have now?",
        state="{name} has {expression} dollars.",
    ),
    StoryTheme(
        key="books",
        start=("A classroom shelf holds {n} books.", "{name}'s class has {n} books on its shelf."),
        operations={
            "+": ("The teacher adds {n} new books to the shelf.", "Students donate {n} more books to the shelf."),
            "-": ("Students borrow {n} books from the shelf and take them home.",
                  "{n} worn-out books are taken off the shelf."),
            "*": ("A library gift makes the number of books on the shelf {n} times as large.",
                  "After a book fair the shelf holds {n} times as many books as before."),
            "/": ("The books are shared equally among {n} classrooms, and the shelf keeps one share.",
                  "The books are divided equally into {n} piles, and only one pile stays on the shelf."),
        },
        question="How many books are on the shelf now?",
        state="The shelf has {expression} books.",
    ),
    StoryTheme(
        key="distance",
        start=("{name}'s walking route is {n} kilometres long.", "{name} plans a bike route of {n} kilometres."),
        operations={
            "+": ("{name} adds a detour of {n} kilometres to the route.",
                  "{name} extends the route by {n} kilometres."),
            "-": ("{name} finds a shortcut that makes the route {n} kilometres shorter.",
                  "{name} leaves out a hill, which removes {n} kilometres from the route."),
            "*": ("{name} makes the route {n} times as long.",
                  "{name} changes the plan so that the route becomes {n} times its length."),
            "/": ("{name} cuts the route into {n} equal parts and keeps only one part as the new route.",
                  "{name} divides the route into {n} equal legs and keeps only the first leg as the route."),
        },
        question="How many kilometres long is {name}'s route now?",
        state="The route is {expression} kilometres long.",
    ),
    StoryTheme(
        key="cookies",
        start=("A baker makes {n} cookies in the morning.", "{name} bakes {n} cookies for a fair."),
        operations={
            "+": ("Another tray adds {n} more cookies.", "{name} buys {n} more cookies from a shop."),
            "-": ("Customers buy {n} of the cookies.", "{n} cookies are eaten at lunch."),
            "*": ("By the afternoon there are {n} times as many cookies as before.",
                  "More trays come out of the oven until there are {n} times as many cookies as before."),
            "/": ("The cookies are packed equally into {n} boxes, and only one box is kept.",
                  "The cookies are shared equally among {n} classes, and only one class's share is kept."),
        },
        question="How many cookies are there now?",
        state="There are {expression} cookies.",
    ),
)


@dataclass(frozen=True)
class ArithmeticConfig:
    """The knobs of the generator, checked on construction."""

    num_ops: int = 3
    max_value: int = 50
    max_factor: int = 5
    operations: str = OPERATION_SYMBOLS
    variety: int = len(THEMES)
    allow_negative: bool = False
    max_result: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.num_ops, int) and self.num_ops >= 1, f"num_ops must be an integer >= 1, got {self.num_ops!r}"),
            (isinstance(self.max_value, int) and self.max_value >= 2, f"max_value must be an integer >= 2, got {self.max_value!r}"),
            (isinstance(self.max_factor, int) and self.max_factor >= 2, f"max_factor must be an integer >= 2, got {self.max_factor!r}"),
            (isinstance(self.variety, int) and 1 <= self.variety <= len(THEMES),
             f"variety must be an integer from 1 to {len(THEMES)} (themes: "
             f"{', '.join(theme.key for theme in THEMES)}), got {self.variety!r}"),
            (isinstance(self.operations, str) and bool(self.operations)
             and set(self.operations) <= set(OPERATION_SYMBOLS),
             f"operations must be a non-empty string of {OPERATION_SYMBOLS!r}, got {self.operations!r}"),
            (isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}"),
            (isinstance(self.max_result, int) and self.max_result >= 2 * self.max_value,
             f"max_result must be an integer >= 2 * max_value, got {self.max_result!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"arithmetic task: {message}")


def apply_operation(value: int, symbol: str, operand: int) -> int:
    """value (symbol) operand; division must be exact."""
    if symbol == "+":
        return value + operand
    if symbol == "-":
        return value - operand
    if symbol == "*":
        return value * operand
    if symbol == "/":
        if operand == 0 or value % operand:
            raise ValueError(f"{value} / {operand} is not an exact division")
        return value // operand
    raise ValueError(f"unknown operation {symbol!r}")


def split_of_numbers(start: int, steps: tuple[tuple[str, int], ...]) -> str:
    """The split a problem's numbers belong to (a stable hash, independent of any seed)."""
    key = f"{start}|" + "|".join(f"{symbol}{operand}" for symbol, operand in steps)
    fraction = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    for split, (low, high) in SPLIT_BUCKETS.items():
        if low <= fraction < high:
            return split
    return "train"  # pragma: no cover - the buckets cover [0, 1)


def _operand_choices(config: ArithmeticConfig, value: int, symbol: str) -> range | list[int]:
    """The operands that keep the next value a valid (exact, in range) integer."""
    if symbol == "+":
        return range(1, min(config.max_value, config.max_result - value) + 1)
    if symbol == "-":
        if config.allow_negative:
            return range(1, min(config.max_value, config.max_result + value) + 1)
        return range(1, min(value - 2, config.max_value) + 1)  # keeps the value >= 2
    if symbol == "*":
        if value == 0:
            return range(2, config.max_factor + 1)
        return range(2, min(config.max_factor, config.max_result // abs(value)) + 1)
    if value == 0:
        return []
    return [n for n in range(2, config.max_factor + 1) if value % n == 0]


def draw_numbers(config: ArithmeticConfig, rng: random.Random) -> tuple[int, tuple[tuple[str, int], ...]] | None:
    """A start value and `num_ops` (symbol, operand) steps, or None when the draw got stuck
    (e.g. only division allowed and a prime value); the caller draws again."""
    start = rng.randint(2, config.max_value)
    value, steps = start, []
    for _ in range(config.num_ops):
        options = [(symbol, _operand_choices(config, value, symbol)) for symbol in config.operations]
        options = [(symbol, operands) for symbol, operands in options if operands]
        if not options:
            return None
        symbol, operands = rng.choice(options)
        operand = rng.choice(operands)
        value = apply_operation(value, symbol, operand)
        steps.append((symbol, operand))
    return start, tuple(steps)


def render_problem(theme: StoryTheme, name: str, start: int, steps: tuple[tuple[str, int], ...],
                   rng: random.Random) -> tuple[str, str, int]:
    """(question, step-by-step solution, answer) for the numbers, in the theme's words."""
    sentences = [rng.choice(theme.start).format(name=name, n=start)]
    solution_steps = []
    value = start
    used_templates: set[str] = set()
    for symbol, operand in steps:
        wordings = theme.operations[symbol]
        fresh = [wording for wording in wordings if wording not in used_templates]
        template = rng.choice(fresh or wordings)
        used_templates.add(template)
        sentences.append(template.format(name=name, n=operand))
        new_value = apply_operation(value, symbol, operand)
        expression = f"{value} {symbol} {operand} = {new_value}"
        solution_steps.append(theme.state.format(name=name, expression=expression))
        value = new_value
    sentences.append(theme.question.format(name=name))
    question = " ".join(sentence[0].upper() + sentence[1:] for sentence in sentences)
    solution_steps.append(f"The answer is {value}.")
    return question, STEP_DELIMITER.join(solution_steps), value


class ArithmeticTask(NumericAnswerTask):
    """Seeded multi-step word problems; see the module docstring for the knobs."""

    name = "arithmetic"

    def __init__(self, num_ops: int = 3, max_value: int = 50, seed: int = 0, variety: int = len(THEMES),
                 max_factor: int = 5, operations: str = OPERATION_SYMBOLS, allow_negative: bool = False,
                 max_result: int = 10_000):
        self.config = ArithmeticConfig(num_ops=num_ops, max_value=max_value, max_factor=max_factor,
                                       operations=operations, variety=variety,
                                       allow_negative=bool(allow_negative), max_result=max_result, seed=seed)
        self.last_load_skipped = 0
        self.last_load_source: str | None = None

    def id_prefix(self, split: str) -> str:
        return f"arith-ops{self.config.num_ops}-max{self.config.max_value}-s{self.config.seed}-{split}"

    def load(self, split: str = "test", limit: int | None = None, path: str | Path | None = None,
             offset: int = 0, skip_bad_lines: bool = False, **options: Any) -> list[Problem]:
        if options:
            raise UserError(f"arithmetic.load() got unknown option(s): {', '.join(sorted(options))}")
        if path is not None:
            raise UserError("the arithmetic task generates its problems; it takes no path "
                            f"(got {str(path)!r}); use the jsonl task to read a file")
        if split not in SPLIT_BUCKETS:
            raise UserError(f"arithmetic task: unknown split {split!r}; valid: {', '.join(SPLIT_BUCKETS)}")
        limit = DEFAULT_LIMIT if limit is None else int(limit)
        offset = int(offset or 0)
        if limit < 0 or offset < 0:
            raise UserError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        problems = self.generate(split, offset + limit)
        self.last_load_skipped = 0
        self.last_load_source = f"generated:{self.id_prefix(split)}"
        return problems[offset:]

    def generate(self, split: str, count: int) -> list[Problem]:
        """The first `count` problems of `split` (always the same for the same options)."""
        config = self.config
        rng = random.Random(f"mcts_po.arithmetic|seed={config.seed}|split={split}")
        themes = THEMES[:config.variety]
        seen: set[tuple[int, tuple[tuple[str, int], ...]]] = set()
        problems: list[Problem] = []
        attempts, max_attempts = 0, 200 * count + 2000
        while len(problems) < count:
            attempts += 1
            if attempts > max_attempts:
                raise UserError(
                    f"arithmetic task: could only make {len(problems)} distinct {split} problems with "
                    f"num_ops={config.num_ops}, max_value={config.max_value}, max_factor={config.max_factor}, "
                    f"operations={config.operations!r}; ask for fewer or widen the ranges")
            drawn = draw_numbers(config, rng)
            if drawn is None:
                continue
            start, steps = drawn
            if (start, steps) in seen or split_of_numbers(start, steps) != split:
                continue
            seen.add((start, steps))
            theme = rng.choice(themes)
            name = rng.choice(NAMES)
            question, solution, answer = render_problem(theme, name, start, steps, rng)
            problems.append(Problem(
                id=f"{self.id_prefix(split)}-{len(problems):05d}", question=question, answer=str(answer),
                solution=solution,
                meta={"task": self.name, "split": split, "theme": theme.key, "start": start,
                      "operations": [[symbol, operand] for symbol, operand in steps],
                      "num_ops": config.num_ops}))
        return problems
