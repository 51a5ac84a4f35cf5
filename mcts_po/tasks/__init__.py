"""Task plugins: where problems come from and how answers are judged, chosen by name.

    from mcts_po.tasks import get_task, list_tasks
    list_tasks()                        # ['arithmetic', 'demo', 'gsm8k', 'jsonl', 'math']
    task = get_task("gsm8k")            # get_task() / get_task(None) gives the demo task
    problems = task.load("test", limit=20, path="../shared/data/gsm8k")
    task.messages(problems[0])          # system + user chat messages
    task.is_correct(model_text, problems[0])

Names:
* `gsm8k`      — GSM8K (file, folder or hub `openai/gsm8k`), numeric answers;
* `math`       — MATH and MATH-500 (`mcts_po.tasks.competition_math`), `\\boxed{}` answers;
* `arithmetic` — seeded synthetic multi-step word problems (`num_ops`, `max_value`, ...);
* `jsonl`      — your own JSONL file with the field names you choose;
* `demo`       — the 54 demo problems bundled in `data/demo_problems.jsonl` (the default).

Options given to `get_task(name, **options)` go to the task's constructor; an unknown name
or option raises `UserError` listing what is valid. `register_task` adds a task.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from mcts_po.io_utils import UserError
from mcts_po.tasks.base import STEP_DELIMITER, Problem, Task

DEFAULT_TASK = "demo"


def _gsm8k(**options: Any) -> Task:
    from mcts_po.tasks.gsm8k import GSM8KTask

    return GSM8KTask(**options)


def _math(**options: Any) -> Task:
    from mcts_po.tasks.competition_math import MathTask

    return MathTask(**options)


def _arithmetic(**options: Any) -> Task:
    from mcts_po.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(**options)


def _jsonl(**options: Any) -> Task:
    from mcts_po.tasks.jsonl_task import JsonlTask

    return JsonlTask(**options)


def _demo(**options: Any) -> Task:
    from mcts_po.tasks.gsm8k import DemoTask

    return DemoTask(**options)


def _task_class(name: str) -> type:
    """The class a registered built-in factory builds (for checking options)."""
    if name == "gsm8k":
        from mcts_po.tasks.gsm8k import GSM8KTask as cls
    elif name == "math":
        from mcts_po.tasks.competition_math import MathTask as cls
    elif name == "arithmetic":
        from mcts_po.tasks.arithmetic import ArithmeticTask as cls
    elif name == "jsonl":
        from mcts_po.tasks.jsonl_task import JsonlTask as cls
    else:
        from mcts_po.tasks.gsm8k import DemoTask as cls
    return cls


TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": _arithmetic,
    "demo": _demo,
    "gsm8k": _gsm8k,
    "jsonl": _jsonl,
    "math": _math,
}
_BUILTIN_FACTORIES = dict(TASKS)


def list_tasks() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Make `get_task(name, **options)` call `factory(**options)`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a task name must be a non-empty string, got {name!r}")
    TASKS[name] = factory


def get_task(name: str | None = None, **options: Any) -> Task:
    """The task called `name` (default: the bundled demo problems), built with `options`."""
    name = DEFAULT_TASK if name is None else name
    factory = TASKS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise UserError(f"unknown task {name!r}; valid names: {', '.join(list_tasks())}")
    if _BUILTIN_FACTORIES.get(name) is factory:
        signature = inspect.signature(_task_class(name).__init__)
        valid = [parameter for parameter in signature.parameters if parameter != "self"]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UserError(f"task {name!r} does not take option(s) {', '.join(unknown)}; "
                            f"valid options: {', '.join(valid) or 'none'}")
    return factory(**options)


__all__ = ["DEFAULT_TASK", "STEP_DELIMITER", "Problem", "TASKS", "Task", "get_task", "list_tasks",
           "register_task"]
