"""Config plumbing, one path for every command and the loop: dataclass fields become CLI flags,
YAML files give defaults, flags override.

Precedence is dataclass default < YAML file (`--config FILE`) < command-line flag. Flags
are generated from the fields and their `metadata["help"]`, registered with default None so
that only flags the user typed override the file. Field kinds:

- `bool` -> `--name / --no-name`; `int`, `float`, `str` (also `int | None`) -> `--name VALUE`;
- `dict[...]` -> `--name '{"json": "object"}'` (a JSON object on the command line, a mapping in YAML);
- a nested config dataclass (a section such as `search:`) gets its own flags through its class;
- `metadata={"escapes": True}`: backslash escapes typed on the command line are decoded
  (`--step-delimiter '\\n\\n'` is two newlines); `metadata={"cli": False}`: no flag (YAML only).

    add_dataclass_arguments(parser, SearchConfig)
    config = build_dataclass(SearchConfig, yaml_section, args)
    top, sections = route_options(load_yaml(path), SearchJob, {"search": SearchConfig, "sampling": SamplingConfig}, path)
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from mcts_po.io_utils import InputError, UserError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_kind(kind: Any) -> Any:
    """`int | None` -> int; `dict[str, Any]` -> dict; other kinds as they are."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return _base_kind(options[0]) if len(options) == 1 else str
    if origin is dict:
        return dict
    return kind


def _json_object(flag: str):
    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"num_ops\": 2}}': {exc}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"num_ops\": 2}'")
        return value
    parse.__name__ = "JSON object"
    return parse


def _unescaped(text: str) -> str:
    return codecs.decode(text, "unicode_escape")


def flag_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, base kind) of the fields of `cls` that get a flag (not sections, not `cli: False`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = _base_kind(hints[f.name])
        if f.metadata.get("cli", True) is False or (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            continue
        out.append((f, kind))
    return out


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, title: str | None = None,
                            skip: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls` (see the module docstring for the kinds); `skip` names fields left out."""
    group = parser.add_argument_group(title or cls.__name__)
    for f, kind in flag_fields(cls):
        if f.name in skip:
            continue
        help_text = f.metadata.get("help", "")
        if f.default is not dataclasses.MISSING:
            help_text = f"{help_text} (default: {f.default!r})"
        flags = (_flag(f.name), *f.metadata.get("aliases", ()))
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is dict:
            group.add_argument(*flags, dest=f.name, type=_json_object(flags[0]), default=None, metavar="JSON",
                               help=help_text)
        elif f.metadata.get("escapes"):
            group.add_argument(*flags, dest=f.name, type=_unescaped, default=None, help=help_text)
        else:
            base = kind if kind in (int, float, str) else str
            group.add_argument(*flags, dest=f.name, type=base, default=None, help=help_text)


def build_dataclass(cls: type, file_values: dict[str, Any] | None, args: argparse.Namespace | None,
                    source: str = "config", **sections: Any):
    """Instantiate `cls` from YAML values overridden by any flags the user gave in `args`.

    `sections` are already-built nested configs (e.g. `search=SearchConfig(...)`). Unknown keys
    and invalid values raise UserError naming `source` (the file or "command line")."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    flagged = {f.name for f, _ in flag_fields(cls)}
    for key, value in (file_values or {}).items():
        key = key.replace("-", "_")
        if key not in names or key in sections:
            valid = sorted(names - set(sections))
            raise UserError(f"{source}: unknown option {key!r} for {cls.__name__}; valid: {', '.join(valid)}")
        values[key] = value
    if args is not None:
        for name in flagged:
            value = getattr(args, name, None)
            if value is not None:
                values[name] = value
    values.update(sections)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: {exc}") from None


def route_options(file_values: dict[str, Any] | None, top: type, sections: dict[str, type],
                  source: str = "config") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a YAML mapping into the options of `top` and of each section.

    A section's options sit under its name (`search: {num_simulations: 8}`); an option that is
    not one of `top`'s may also sit at the top level when exactly one section has it. Unknown
    keys raise UserError naming the valid ones."""
    top_names = {f.name for f in dataclasses.fields(top)} - set(sections)
    section_names = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in sections.items()}
    top_values: dict[str, Any] = {}
    routed: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in (file_values or {}).items():
        key = key.replace("-", "_")
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"{source}: `{key}:` must be a mapping of options")
            for inner, inner_value in value.items():
                inner = inner.replace("-", "_")
                if inner not in section_names[key]:
                    raise UserError(f"{source}: unknown option {inner!r} in `{key}:`; valid: "
                                    f"{', '.join(sorted(section_names[key]))}")
                routed[key][inner] = inner_value
        elif key in top_names:
            top_values[key] = value
        else:
            owners = [name for name, names in section_names.items() if key in names]
            if len(owners) > 1:
                raise UserError(f"{source}: option {key!r} belongs to the sections {' and '.join(owners)}; "
                                "set it under one of them")
            if not owners:
                raise UserError(f"{source}: unknown option {key!r}; valid: {', '.join(sorted(top_names))} and the "
                                f"sections {', '.join(sections)}")
            routed[owners[0]].setdefault(key, value)
    return top_values, routed


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


def section(file_values: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """A command's options from a YAML file: the `name:` section if there is one, else the top level."""
    if name not in file_values:
        return file_values
    values = file_values[name] or {}
    if not isinstance(values, dict):
        raise UserError(f"{source}: `{name}:` must be a mapping of options")
    return dict(values)
