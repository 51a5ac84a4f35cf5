"""File helpers shared by every command: atomic writes and JSONL reading with file:line errors
(and `common_prefix_length`, the one sequence helper that backends and training share).

Long runs must never lose finished work to a crash, and bad input must point at the
file and line that is wrong. Everything that writes results goes through
`atomic_write_text` / `append_jsonl_line`; everything that reads JSONL goes through
`read_jsonl`.

    from mcts_po.io_utils import read_jsonl
    for line_no, record in read_jsonl("problems.jsonl"): ...
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


class UserError(Exception):
    """An error whose message is enough for the user to fix it (unknown name, bad option).
    The CLI prints it as one line, without a traceback."""


class InputError(ValueError):
    """Bad user input, with the file and line it came from. The CLI prints it without a traceback."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file 0600; a results file is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def append_jsonl_line(path: str | os.PathLike, line: str) -> None:
    """Append one complete line and fsync it. A crash leaves at most a torn last line,
    which `read_jsonl(..., drop_torn_tail=True)` discards on resume."""
    if "\n" in line:
        raise ValueError("a JSONL record must not contain a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def append_jsonl_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Append several complete lines in one write and fsync them (a crash leaves the earlier
    lines whole and at most a torn last line)."""
    if not lines:
        return
    if any("\n" in line for line in lines):
        raise ValueError("a JSONL record must not contain a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(
    path: str | os.PathLike,
    *,
    skip_bad_lines: bool = False,
    drop_torn_tail: bool = False,
    on_skip: Callable[[InputError], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, parsed_object) for each non-blank line, numbering from 1.

    A line that is not valid JSON raises `InputError` naming the file and line, unless
    `skip_bad_lines` (then `on_skip` is told). With `drop_torn_tail`, a last line without
    its newline that does not parse is treated as the remains of an interrupted append.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "file not found")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(path, line, "not valid UTF-8") from None
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        line_no = index + 1
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            is_tail = index == len(lines) - 1 and not ends_with_newline
            if drop_torn_tail and is_tail:
                return
            error = InputError(path, line_no, f"invalid JSON ({exc.msg} at column {exc.colno})")
            if skip_bad_lines:
                if on_skip is not None:
                    on_skip(error)
                continue
            raise error from None


def common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items `a` and `b` share (token ids: the transformers backend's shared
    prefill, the TRL trainer's prompt/completion split)."""
    k, limit = 0, min(len(a), len(b))
    while k < limit and a[k] == b[k]:
        k += 1
    return k
