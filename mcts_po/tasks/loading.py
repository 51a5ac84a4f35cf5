"""Shared loading helpers for the task plugins: find the source, read and check rows, slice.

A task's `load(split, limit, path, offset, skip_bad_lines)` accepts three kinds of source:

* a JSONL file (`problems.jsonl`);
* a folder holding the split's file (`data/gsm8k` with `test.jsonl`, or `data` with
  `gsm8k/test.jsonl`; each task names its candidate file names);
* a Hugging Face hub id (`openai/gsm8k`): a string of the form `owner/name` that is not an
  existing path. Those load with `datasets.load_dataset` (imported only then).

Every row goes through a task-specific `parse_row(row, row_index) -> Problem` that raises
`RowError` for a row it cannot use; this module turns that into an `InputError` naming the
file and line (or hub id and row), or, with `skip_bad_lines=True`, skips the row, logs a
warning and counts it.

    rows = read_source_rows(source, skip_bad_lines=False)   # [(line_no, row_index, dict)]
    problems, skipped = parse_rows(rows, source, parse_row, skip_bad_lines=False)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_po.io_utils import InputError, UserError, read_jsonl
from mcts_po.tasks.base import Problem

logger = logging.getLogger(__name__)

# `owner/name`, letters, digits, '-', '_', '.'; no leading '.' (so "./x" and "../x" are paths).
_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*/[A-Za-z0-9_][\w.-]*$")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".txt")


class RowError(ValueError):
    """A row that a task cannot turn into a Problem (missing field, empty answer, ...)."""


@dataclass(frozen=True)
class Source:
    """Where problems come from: a local JSONL file, or a hub dataset (id, config, split)."""

    kind: str  # "file" or "hub"
    location: str  # file path or hub id
    config: str | None = None
    hub_split: str | None = None

    def describe(self) -> str:
        if self.kind == "file":
            return self.location
        config = f", config {self.config}" if self.config else ""
        return f"{self.location} (hub{config}, split {self.hub_split})"


def looks_like_hub_id(path: str) -> bool:
    """True for `owner/name` strings that are not an existing path and not a file name."""
    return (bool(_HUB_ID.match(path)) and not Path(path).exists()
            and not path.lower().endswith(_FILE_SUFFIXES))


def resolve_source(path: str | Path, split: str, candidate_names: Sequence[str],
                   hub_config: str | None = None, hub_split: str | None = None) -> Source:
    """Turn the user's `path` into a Source.

    A folder is searched for `candidate_names` (relative paths, first match wins); a hub id
    loads split `hub_split` (default `split`) with config `hub_config`.
    """
    text = str(path)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        for name in candidate_names:
            file_path = candidate / name
            if file_path.is_file():
                return Source("file", str(file_path))
        tried = ", ".join(candidate_names)
        raise InputError(candidate, None, f"no file for split {split!r} in this folder (looked for {tried})")
    if candidate.is_file():
        return Source("file", str(candidate))
    if looks_like_hub_id(text):
        return Source("hub", text, hub_config, hub_split or split)
    raise InputError(candidate, None, "file not found (not a file, a folder, or an owner/name hub id)")


def read_source_rows(source: Source, *, skip_bad_lines: bool = False) -> tuple[list[tuple[int, int, Any]], int]:
    """All rows of a source as (line_no, row_index, row) plus the number of unparseable
    lines skipped. `row_index` counts from 0 and is the line number minus one for files
    (stable even when bad lines are skipped), the dataset row for hub sources."""
    if source.kind == "hub":
        return [(index + 1, index, row) for index, row in enumerate(_load_hub_rows(source))], 0
    skipped: list[InputError] = []

    def note_skip(error: InputError) -> None:
        logger.warning("skipping bad line: %s", error)
        skipped.append(error)

    rows = [(line_no, line_no - 1, row)
            for line_no, row in read_jsonl(source.location, skip_bad_lines=skip_bad_lines, on_skip=note_skip)]
    if not rows and not skipped:
        raise InputError(source.location, None, "file is empty: no problems in it")
    return rows, len(skipped)


def _load_hub_rows(source: Source) -> list[dict[str, Any]]:
    try:
        import datasets  # lazy: only hub sources need it
    except ImportError as error:
        raise UserError(f"loading {source.location!r} from the hub needs the 'datasets' package "
                        f"(pip install datasets): {error}") from None
    try:
        dataset = datasets.load_dataset(source.location, name=source.config, split=source.hub_split)
    except Exception as error:  # network, unknown id/config/split: all user-fixable
        raise UserError(f"could not load hub dataset {source.describe()}: {type(error).__name__}: {error} "
                        f"(there is no local file or folder {source.location!r} either)") from None
    return [dict(row) for row in dataset]


def parse_rows(rows: list[tuple[int, int, Any]], source: Source,
               parse_row: Callable[[Any, int], Problem], *, skip_bad_lines: bool = False) -> tuple[list[Problem], int]:
    """Problems from rows; bad rows raise `InputError` (file and line) or are skipped.
    Duplicate problem ids are errors too (ids must be stable and unique)."""
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    skipped = 0
    for line_no, row_index, row in rows:
        try:
            if not isinstance(row, dict):
                raise RowError(f"expected a JSON object, got {type(row).__name__}")
            problem = parse_row(row, row_index)
            if problem.id in first_line_of_id:
                raise RowError(f"duplicate problem id {problem.id!r} (first on line {first_line_of_id[problem.id]})")
        except RowError as error:
            input_error = InputError(_where(source), line_no, str(error))
            if not skip_bad_lines:
                raise input_error from None
            logger.warning("skipping bad line: %s", input_error)
            skipped += 1
            continue
        first_line_of_id[problem.id] = line_no
        problems.append(problem)
    return problems, skipped


def _where(source: Source) -> str:
    """The `path` part of an InputError: the file, or `owner/name[split] row` (1-based rows)."""
    return source.location if source.kind == "file" else f"{source.location}[{source.hub_split}] row"


def slice_problems(problems: list[Problem], offset: int = 0, limit: int | None = None) -> list[Problem]:
    """problems[offset:offset+limit], with checked arguments."""
    offset = int(offset or 0)
    if offset < 0:
        raise UserError(f"offset must be >= 0, got {offset}")
    if limit is not None:
        limit = int(limit)
        if limit < 0:
            raise UserError(f"limit must be >= 0, got {limit}")
        return problems[offset:offset + limit]
    return problems[offset:]


def required_text(row: dict[str, Any], field_name: str, *, alternatives: Sequence[str] = ()) -> str:
    """The non-empty text of `field_name` (or the first present alternative); numbers are
    accepted and turned into text. Raises RowError naming the field."""
    for name in (field_name, *alternatives):
        if name in row and row[name] is not None:
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise RowError(f"field {name!r} must be text, got {type(value).__name__}")
            text = str(value).strip()
            if not text:
                raise RowError(f"field {name!r} is empty")
            return text
    names = " or ".join(repr(name) for name in (field_name, *alternatives))
    present = ", ".join(sorted(map(str, row))) or "none"
    raise RowError(f"missing field {names} (fields present: {present})")


def optional_text(row: dict[str, Any], field_name: str | None) -> str:
    """The text of an optional field, '' when absent or null."""
    if not field_name or row.get(field_name) is None:
        return ""
    return str(row[field_name]).strip()


def load_problems(task: Any, source: Source, parse_row: Callable[[Any, int], Problem], *,
                  offset: int = 0, limit: int | None = None, skip_bad_lines: bool = False) -> list[Problem]:
    """Read, parse and slice; records `task.last_load_skipped` and `task.last_load_source`."""
    rows, bad_json = read_source_rows(source, skip_bad_lines=skip_bad_lines)
    problems, bad_rows = parse_rows(rows, source, parse_row, skip_bad_lines=skip_bad_lines)
    skipped = bad_json + bad_rows
    task.last_load_skipped = skipped
    task.last_load_source = source.describe()
    if skipped:
        logger.warning("%s: skipped %d bad line(s); %d problem(s) loaded", source.describe(), skipped, len(problems))
    if not problems:
        raise InputError(_where(source) if source.kind == "file" else source.describe(), None,
                         f"no usable problems ({skipped} bad line(s) skipped)")
    return slice_problems(problems, offset, limit)
