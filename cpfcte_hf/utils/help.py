# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The front door of every command: `--help`, misspelt options and bad values, answered from the same dataclass
fields and metadata that `HfArgumentParser` parses (`utils.options`: `help`, `aliases`, both spellings, `--no_<flag>`)
— without importing transformers, torch or datasets, so that all three answer at once.

A command's options may include a dataclass that lives in a heavy module (`TrainingArguments`): it is named as
`LazyArguments("module:Class", heading)`, listed by `--help_all` only, imported only for the real parse, and checked
here from its stored option table (`lazy_options.json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Sequence

from .options import LazyArguments, add_spec, field_spec, field_specs, is_lazy, resolve, table_serves
from .presets import key_value_list


__all__ = [
    "COMMON_OPTIONS",
    "LazyArguments",
    "answer_front_door",
    "did_you_mean",
    "fail",
    "format_help",
    "is_lazy",
    "option_strings",
    "print_error",
    "resolve",
    "unknown_options",
]

# Options of every command besides its fields' (`utils.arguments` adds them to the real parser too).
COMMON_OPTIONS = ("--config", "--print_config", "--print-config")
HELP_OPTIONS = ("-h", "--help", "--help_all", "--help-all")


def print_error(error: BaseException | str) -> None:
    """`error: <message>` on stderr, on one line: a library's message that spans several is joined."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: {' '.join(lines) or type(error).__name__}", file=sys.stderr, flush=True)


def fail(message: str, status: int = 2):
    """Ends a command with one line on stderr, no traceback."""
    print_error(message)
    raise SystemExit(status)


def option_strings(field: dataclasses.Field, field_type) -> list[str]:
    """Every spelling `HfArgumentParser` accepts for `field` (and its `--no_` complements for a true-by-default flag)."""
    spec = field_spec(field, field_type)
    return spec["options"] + spec["negative"]


def _fields(dataclass_type) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(dataclass_type)
    return [(f, hints.get(f.name, str)) for f in dataclasses.fields(dataclass_type) if f.init]


def _type_name(field_type) -> str:
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType):
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
        spec = field_spec(field, field_type)
        help_text = field.metadata.get("help", "") + _default_text(field)
        if spec["negative"]:
            help_text += f" {' / '.join(spec['negative'][::2])}: off."
        group.add_argument(*spec["options"], metavar=_type_name(field_type), help=help_text.replace("%", "%%"))


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
    common.add_argument(*COMMON_OPTIONS[1:], action="store_true", help="Print the resolved settings and exit.")
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
    """The `--options` in `args` that no field of `dataclass_types` spells (lazy ones: their stored table), nor `extra`."""
    known = set(extra)
    for dataclass_type in dataclass_types:
        for spec in field_specs(dataclass_type):
            known.update(spec["options"] + spec["negative"])
    return [arg.split("=")[0] for arg in args if arg.startswith("--") and arg.split("=")[0] not in known]


def did_you_mean(option: str, dataclass_types: Sequence, extra: Sequence[str] = ()) -> str:
    known = list(extra) + [f"--{spec['name']}" for t in dataclass_types for spec in field_specs(t)]
    close = difflib.get_close_matches(option, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _CheckingParser(argparse.ArgumentParser):
    """A parser whose errors are raised (`ValueError`), for the front door to say them in its own words."""

    def error(self, message):
        raise ValueError(message)


def _checking_parser(dataclass_types: Sequence, **spec_kwargs) -> _CheckingParser:
    """A parser of the options of `dataclass_types` (and `--config`, `--print_config`) as `HfArgumentParser` makes
    them; `spec_kwargs` go to every option's `add_argument` (`default=argparse.SUPPRESS`: given options only)."""
    parser = _CheckingParser(add_help=False, allow_abbrev=False)
    parser.add_argument(COMMON_OPTIONS[0])
    parser.add_argument(*COMMON_OPTIONS[1:], action="store_true")
    for dataclass_type in dataclass_types:
        for spec in field_specs(dataclass_type):
            add_spec(parser, spec, **spec_kwargs)
    return parser


def check_values(args: Sequence[str], dataclass_types: Sequence) -> None:
    """
    Parses `args` with the options of `dataclass_types` (values converted and checked as `HfArgumentParser` does),
    ending the command with one line at the first bad value or stray word. Presets and the dataclasses' own checks
    (`__post_init__`) are left to the real parse.
    """
    try:
        _, rest = _checking_parser(dataclass_types).parse_known_args(list(args))
    except ValueError as error:
        fail(f"{error} (see --help)")
    if rest:
        fail(f"unrecognised arguments: {' '.join(rest)} (see --help)")


def answer_front_door(args: Sequence[str], dataclass_types: Sequence, prog: str | None, description: str | None):
    """
    Answers `--help` (exit 0), an unknown option ("did you mean") and a bad value (exit 2, one line) without the heavy
    libraries; returns when `args` are fine as far as the option table can tell.
    """
    if any(arg in HELP_OPTIONS for arg in args):
        show_all = bool({"--help_all", "--help-all"} & set(args))
        print(format_help(dataclass_types, prog, description, show_all=show_all), end="")
        raise SystemExit(0)
    if not table_serves(dataclass_types):
        return  # no stored table for a lazy dataclass: the real parse checks everything
    unknown = unknown_options(args, dataclass_types, COMMON_OPTIONS)
    if unknown:
        suggestion = did_you_mean(unknown[0], dataclass_types, COMMON_OPTIONS)
        fail(f"unrecognised arguments: {unknown[0]}{suggestion} (see --help)")
    check_values(args, dataclass_types)


def given_options(args: Sequence[str], dataclass_types: Sequence) -> dict[str, object]:
    """The options `args` gives, by field name, converted as `HfArgumentParser` converts them (none of the defaults):
    what the front door's own parse saw."""
    namespace, _ = _checking_parser(dataclass_types, default=argparse.SUPPRESS).parse_known_args(list(args))
    return {key: value for key, value in vars(namespace).items() if key not in ("config", "print_config")}


def light_instances(args: Sequence[str], dataclass_types: Sequence, preset: dict) -> tuple:
    """
    The command's option dataclasses as the real parse will make them, built without transformers: each field from
    the command line, else the preset (`preset`: its values for this command), else its default; a preset's
    `dataset_option` pairs go first, as the real parse puts them. A `LazyArguments` (Trainer's options) is a
    namespace of the same values, its defaults those of the stored table (only those JSON holds: reading another
    is an AttributeError), without its class's own checks.
    """
    given = given_options(args, dataclass_types)
    instances = []
    for dataclass_type in dataclass_types:
        if is_lazy(dataclass_type):
            names = {spec["name"] for spec in field_specs(dataclass_type)}
            values = dataclass_type.defaults()
            values.update({k: v for k, v in preset.items() if k in names})
            values.update({k: v for k, v in given.items() if k in names})
            instances.append(types.SimpleNamespace(**values))
            continue
        names = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
        values = {k: v for k, v in preset.items() if k in names and k != "dataset_option"}
        values.update({k: v for k, v in given.items() if k in names})
        if "dataset_option" in names and preset.get("dataset_option"):
            if values.get("dataset", getattr(dataclass_type, "dataset", None)) == preset.get("dataset"):
                values["dataset_option"] = key_value_list(preset["dataset_option"]) + list(
                    values.get("dataset_option") or []
                )
        instances.append(dataclass_type(**values))
    return tuple(instances)
