"""Config plumbing: dataclass fields become CLI flags; YAML files give defaults; flags override.

Precedence is dataclass default < YAML file (`--config FILE`) < command-line flag. Flags
are registered with default None so that only flags the user typed override the file.

    add_dataclass_arguments(parser, SearchConfig)
    config = build_dataclass(SearchConfig, yaml_section, args)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from mcts_po.io_utils import InputError, UserError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, title: str | None = None) -> None:
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{help_text} (default: {default!r})"
        flags = (_flag(f.name), *f.metadata.get("aliases", ()))
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            base = kind if kind in (int, float, str) else str
            group.add_argument(*flags, dest=f.name, type=base, default=None, help=help_text)


def build_dataclass(cls: type, file_values: dict[str, Any] | None, args: argparse.Namespace | None, source: str = "config"):
    """Instantiate `cls` from YAML values overridden by any flags the user gave."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in (file_values or {}).items():
        key = key.replace("-", "_")
        if key not in names:
            raise UserError(f"{source}: unknown option {key!r} for {cls.__name__}; valid: {', '.join(sorted(names))}")
        values[key] = value
    if args is not None:
        for name in names:
            value = getattr(args, name, None)
            if value is not None:
                values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: {exc}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(path, line, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise InputError(path, 1, "a config file must hold a mapping of options")
    return data
