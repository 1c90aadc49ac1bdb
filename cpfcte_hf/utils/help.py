# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`--help` and the option-name check of every command, read from the same dataclass fields and metadata that
`HfArgumentParser` parses (`help`, `aliases`, both spellings, `--no_<flag>` for a flag that defaults to true) —
without importing transformers, torch or datasets, so that both answer at once.

A command's options may include a dataclass that lives in a heavy module (`TrainingArguments`): it is named as
`LazyArguments("module:Class", heading)`, listed by `--help_all` only, and imported only for the real parse.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import typing
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LazyArguments:
    """A dataclass of options imported only when needed: `"package.module:ClassName"`."""

    target: str
    heading: str

    def load(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


def is_lazy(dataclass_type) -> bool:
    return isinstance(dataclass_type, LazyArguments)


def resolve(dataclass_types: Sequence) -> tuple[type, ...]:
    """The dataclass types, with every `LazyArguments` imported."""
    return tuple(t.load() if is_lazy(t) else t for t in dataclass_types)


def option_strings(field: dataclasses.Field, field_type) -> list[str]:
    """Every spelling `HfArgumentParser` accepts for `field` (and its `--no_` complement for a true-by-default flag)."""
    names = [f"--{field.name}"]
    if "_" in field.name:
        names.append(f"--{field.name.replace('_', '-')}")
    aliases = field.metadata.get("aliases", [])
    names += [aliases] if isinstance(aliases, str) else list(aliases)
    if field.default is True and field_type in (bool, bool | None):
        names += [f"--no_{field.name}", f"--no-{field.name.replace('_', '-')}"]
    return names


def _fields(dataclass_type) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(dataclass_type)
    return [(f, hints.get(f.name, str)) for f in dataclasses.fields(dataclass_type) if f.init]


def _type_name(field_type) -> str:
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(field_type) if a is not type(None)]
        return _type_name(args[0]) if len(args) == 1 else "VALUE"
    if origin is list:
        (item,) = typing.get_args(field_type) or (str,)
        return f"{_type_name(item)} [...]"
    if origin is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(field_type))) + "}"
    return getattr(field_type, "__name__", "VALUE").upper()


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f" (default: {field.default})"
    if field.default_factory is not dataclasses.MISSING:
        return f" (default: {field.default_factory()})"
    return " (required)"


def _add_group(parser: argparse.ArgumentParser, title: str, dataclass_type) -> None:
    group = parser.add_argument_group(title)
    for field, field_type in _fields(dataclass_type):
        names = [name for name in option_strings(field, field_type) if not name.startswith("--no")]
        help_text = field.metadata.get("help", "") + _default_text(field)
        if field.default is True and field_type in (bool, bool | None):
            help_text += f" --no_{field.name}: off."
        group.add_argument(*names, metavar=_type_name(field_type), help=help_text.replace("%", "%%"))


def format_help(dataclass_types: Sequence, prog: str | None, description: str | None, show_all: bool = False) -> str:
    """The command's help: its own options first, grouped by dataclass, then (with `show_all`) the lazy ones."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False
    )
    common = parser.add_argument_group("every command")
    common.add_argument("-h", "--help", action="store_true", help="Show this command's options and exit.")
    common.add_argument(
        "--config", metavar="PRESET", help="Preset: a packaged name (voc, shapes, ...) or a YAML path."
    )
    common.add_argument("--print_config", action="store_true", help="Print the resolved settings and exit.")
    lazy = [t for t in dataclass_types if is_lazy(t)]
    if lazy:
        common.add_argument(
            "--help_all", action="store_true", help="Also list " + ", ".join(t.heading for t in lazy) + "."
        )
    for dataclass_type in dataclass_types:
        if is_lazy(dataclass_type):
            if show_all:
                _add_group(parser, dataclass_type.heading, dataclass_type.load())
            continue
        doc = (dataclass_type.__doc__ or "").strip().splitlines()
        title = doc[0] if doc and not doc[0].startswith(dataclass_type.__name__ + "(") else dataclass_type.__name__
        _add_group(parser, title, dataclass_type)
    text = parser.format_help()
    if lazy and not show_all:
        text += "\n" + "\n".join(f"{t.heading}: see --help_all." for t in lazy) + "\n"
    return text


def unknown_options(args: Sequence[str], dataclass_types: Sequence, extra: Sequence[str] = ()) -> list[str]:
    """The `--options` in `args` that no field of `dataclass_types` (all imported) spells, nor `extra`."""
    known = set(extra)
    for dataclass_type in dataclass_types:
        for field, field_type in _fields(dataclass_type):
            known.update(option_strings(field, field_type))
    return [arg.split("=")[0] for arg in args if arg.startswith("--") and arg.split("=")[0] not in known]


def did_you_mean(option: str, dataclass_types: Sequence, extra: Sequence[str] = ()) -> str:
    known = list(extra)
    for dataclass_type in dataclass_types:
        known += [f"--{field.name}" for field, _ in _fields(dataclass_type)]
    close = difflib.get_close_matches(option, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
