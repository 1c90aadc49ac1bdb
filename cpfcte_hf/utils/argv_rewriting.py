# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Version 0.1.0's argv rewriting (`cpfcte_hf.cli.normalize_argv`, `accept_both_spellings` and their tables), kept
for its importers until 0.3 (`_compat`). The package no longer uses any of it: the aliases are `aliases` in the
fields' metadata, a repeatable list is a `RepeatableList` option, and both spellings of a plain parser's options come
from `BothSpellingsParser` (`utils.arguments`).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence


# 0.1.0's tables, as they were (the options now declare these names in their fields' metadata).
OPTION_ALIASES = {
    "--out": "--output_dir",
    "--root": "--data_root",
    "--demo_dir": "--output_dir",
    "--dataset_options": "--dataset_option",
    "--no_label_masking": "--no_use_image_labels",
}
FALLBACK_ALIASES = {"--model": "--model_name_or_path"}
REPEATABLE_LISTS = ("--dataset_option", "--results", "--pred", "--override")


def normalize_argv(args: Sequence[str]) -> list[str]:
    """
    Deprecated: 0.1.0's rewriting of `args` (underscores for dashes, `OPTION_ALIASES` replaced, the values of every
    `REPEATABLE_LISTS` flag gathered behind one flag). Today's parsers take every spelling as it is.
    """
    normalized = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, equals, value = arg.partition("=")
            name = "--" + name[2:].replace("-", "_")
            arg = OPTION_ALIASES.get(name, name) + equals + value
        normalized.append(arg)
    for flag in REPEATABLE_LISTS:
        values, rest, found, index = [], [], False, 0
        while index < len(normalized):
            arg, index = normalized[index], index + 1
            if arg == flag:
                found = True
                while index < len(normalized) and not normalized[index].startswith("--"):
                    values.append(normalized[index])
                    index += 1
            elif arg.startswith(flag + "="):
                found = True
                values.append(arg.partition("=")[2])
            else:
                rest.append(arg)
        normalized = [*rest, flag, *values] if found else rest
    return normalized


class _SameAs(argparse.Action):
    """Another spelling of `target`'s option: its values go to `target`."""

    def __init__(self, option_strings, dest, target, **kwargs):
        super().__init__(
            option_strings, target.dest, nargs=target.nargs, const=target.const, type=target.type,
            choices=target.choices, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
        )  # fmt: skip
        self.target = target

    def __call__(self, parser, namespace, values, option_string=None):
        self.target(parser, namespace, values, option_string)


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """
    Deprecated (build the parser as a `utils.arguments.BothSpellingsParser` instead): adds the other spelling of
    every long option of `parser` (`--batch-size` / `--batch_size`) that no option spells yet.
    """
    for action in list(parser._actions):  # read only: the spellings are added with `add_argument`
        for option in [o for o in action.option_strings if o.startswith("--")]:
            for other in {"--" + option[2:].replace("-", "_"), "--" + option[2:].replace("_", "-")} - {option}:
                try:
                    parser.add_argument(other, action=functools.partial(_SameAs, target=action))
                except argparse.ArgumentError:  # taken already
                    pass
    return parser
