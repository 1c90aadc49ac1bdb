# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one option vocabulary of `cpfcte-hf`: `HfArgumentParser` over dataclasses, with YAML presets.

    cpfcte-hf train --config voc --learning_rate 5e-5
    cpfcte-hf train --config my_preset.yaml --print_config

Every option takes both spellings (`--data_root` / `--data-root`), and a few older names are aliases, declared in
the field's metadata (`aliases`: `--out` for `--output_dir`, `--root` for `--data_root`, `--demo_dir` for `run`'s
`--output_dir`, `--model` for `--model_name_or_path`, `--no_label_masking` for `--no_use_image_labels`), so that
`--help` lists them and `HfArgumentParser` parses them as they are. `--dataset_option` takes several KEY=VALUE pairs
and may be repeated (`RepeatableList`); its pairs are added to the preset's (the last value of a key wins), unless
`--dataset` names another dataset than the preset's. `--config` and the preset rules: `utils.presets`.
`--print_config` prints the resolved settings (preset + command line) and exits.

`--help`, a misspelt option and a bad value are answered before transformers is imported (`utils.help`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import yaml

from .help import COMMON_OPTIONS, answer_front_door, fail, light_instances, print_error
from .options import RepeatableList, both_spellings, field_specs, resolve, spellings, table_serves
from .presets import (
    COMMAND_ALIASES,
    COMMAND_SECTIONS,
    PRESET_DIR,
    SHARED_KEYS,
    PresetError,
    PresetNotFound,
    available_presets,
    canonical_sections,
    key_value_list,
    load_preset,
    named_preset,
    preset_source,
    preset_values_for,
    resolve_preset,
)


__all__ = [
    "COMMAND_ALIASES",
    "COMMAND_SECTIONS",
    "PRESET_DIR",
    "SHARED_KEYS",
    "BothSpellingsParser",
    "PresetError",
    "PresetNotFound",
    "RepeatableList",
    "available_presets",
    "build_parser",
    "canonical_sections",
    "check_model_option",
    "config_option",
    "describe",
    "fail",
    "load_preset",
    "loader_options",
    "named_preset",
    "option_fields",
    "parse_args_with_presets",
    "parse_key_values",
    "parse_plain_args",
    "preset_values_for",
    "print_error",
    "print_once",
    "require",
    "resolve_preset",
]


class BothSpellingsParser(argparse.ArgumentParser):
    """
    A plain argparse parser (the benchmarks') in the vocabulary of the other commands: every long option it is given
    is added under both spellings (`--batch-size` and `--batch_size`).
    """

    def add_argument(self, *names, **kwargs):
        spelt = (both_spellings(name) if name.startswith("--") else [name] for name in names)
        return super().add_argument(*dict.fromkeys(spelling for group in spelt for spelling in group), **kwargs)


def parse_plain_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, known_only: bool = False):
    """
    Parses `argv` with a plain argparse parser (the benchmarks': a `BothSpellingsParser`, so that every option takes
    both spellings), with `--print_config` printing the resolved options and exiting. With `known_only`, the
    options the parser does not know are returned too, for another parser: `(args, rest)`.
    """
    parser.add_argument(
        *COMMON_OPTIONS[1:], dest="print_config", action="store_true", help="Print the resolved settings and exit"
    )
    args, rest = parser.parse_known_args(argv) if known_only else (parser.parse_args(argv), [])
    if args.print_config:
        settings = {key: value for key, value in vars(args).items() if key != "print_config"}
        print(json.dumps({**settings, **({"other_options": rest} if rest else {})}, indent=2))
        raise SystemExit(0)
    return (args, rest) if known_only else args


def option_fields(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for dataclass_type in dataclass_types for f in dataclasses.fields(dataclass_type) if f.init}


def config_option(args: Sequence[str]) -> argparse.Namespace:
    """`--config` and `--print_config` of `args` (`config`, `print_config`), the other options left alone."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(COMMON_OPTIONS[0], default=None)
    parser.add_argument(*COMMON_OPTIONS[1:], dest="print_config", action="store_true")
    return parser.parse_known_args(list(args))[0]


def build_parser(dataclass_types: Sequence[type], description: str | None = None, prog: str | None = None):
    """
    transformers' `HfArgumentParser` over `dataclass_types` (imported), plus `--config`, `--print_config` and the
    `--no_` spellings of the aliases of true-by-default flags (`--no_label_masking`), which it does not make itself.
    Abbreviations are refused: an option is spelt as its field (or an alias) spells it, as the front door checks.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, description=description, prog=prog, allow_abbrev=False)
    parser.add_argument(
        COMMON_OPTIONS[0], default=None, help="Preset: a packaged name (voc, shapes, ...) or a YAML path"
    )
    parser.add_argument(
        *COMMON_OPTIONS[1:], dest="print_config", action="store_true", help="Print the resolved settings and exit"
    )
    for spec in (spec for dataclass_type in dataclass_types for spec in field_specs(dataclass_type)):
        made = {f"--no_{spec['name']}", f"--no-{spec['name'].replace('_', '-')}"}  # HfArgumentParser's own
        extra = [option for option in spec["negative"] if option not in made]
        if extra:
            parser.add_argument(*extra, dest=spec["name"], action="store_false", default=argparse.SUPPRESS)
    return parser


def parse_args_with_presets(
    dataclass_types: Sequence[type],
    args: Sequence[str] | None = None,
    description: str | None = None,
    command: str | None = None,
    prog: str | None = None,
    early_check=None,
    light: bool = False,
):
    """
    Parses `args` (default `sys.argv[1:]`) into instances of `dataclass_types`, with `--config PRESET` supplying
    defaults (`utils.presets`). Returns the tuple of dataclass instances.

    `early_check(*instances)` (optional) checks the inputs (data, tags, the model's folder) on instances built
    without transformers (`utils.help.light_instances`; Trainer's options: a namespace) before the real parse
    imports it, except with `--print_config`; what it raises (`OSError`, `ValueError`) reaches the caller.

    With `light`, returns those instances instead (None where the stored table does not serve this transformers):
    `cpfcte-hf run` and `reproduce` check their steps with them.

    `--help`, an unknown option or a bad value is answered without transformers (`utils.help`). `--print_config`
    prints the resolved instances as JSON and exits (status 0). A preset error prints one line (`error: ...`) and
    exits with status 2.
    """
    args = list(sys.argv[1:] if args is None else args)
    answer_front_door(args, dataclass_types, prog, description)
    known = config_option(args)
    source = preset_source(known.config) if known.config else None
    # The preset is read and its keys checked before transformers is imported (a key of Trainer's options is known
    # from the stored table; without one for this transformers, the keys are checked after the import).
    values = _preset_values(known.config, command, dataclass_types, source, light=True)
    if light or (early_check is not None and not known.print_config):
        instances = _light_instances(args, dataclass_types, values, source)
        if light:
            return instances
        if instances is not None:  # its OSError / ValueError: the command's own start reports it (exit status 2)
            early_check(*instances)
    dataclass_types = resolve(dataclass_types)
    from .distributed import cpu_processes_use_gloo

    cpu_processes_use_gloo()
    parser = build_parser(dataclass_types, description=description, prog=prog)
    if values is None:
        values = _preset_values(known.config, command, dataclass_types, source)
    preset_options, preset_dataset = _apply_preset(parser, values)
    try:
        *outputs, unknown = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    except ValueError as error:  # a dataclass refusing its values (e.g. bf16 without a GPU): one line
        fail(f"{error}{f' (preset {source})' if source else ''}")
    if unknown:
        fail(f"unrecognised arguments: {' '.join(unknown)} (see --help)")
    instances = tuple(output for output in outputs if dataclasses.is_dataclass(output))
    for instance in instances if preset_options else ():
        # The preset's loader options belong to its dataset: another --dataset on the command line drops them.
        if hasattr(instance, "dataset_option") and getattr(instance, "dataset", None) == preset_dataset:
            instance.dataset_option = key_value_list(preset_options) + list(instance.dataset_option or [])
    if known.print_config:
        print_once(describe(*instances))
        raise SystemExit(0)
    return instances


def _light_instances(args, dataclass_types, values: dict | None, source: str | None) -> tuple | None:
    """`light_instances`, a dataclass refusing its values said in one line; None without the preset's values (no
    stored table of a lazy dataclass's options for this transformers: the real parse checks all)."""
    if values is None:
        return None
    try:
        return light_instances(args, dataclass_types, values)
    except ValueError as error:  # as the real parse says it
        fail(f"{error}{f' (preset {source})' if source else ''}")


def _preset_values(config: str | None, command: str | None, dataclass_types, source: str | None, light: bool = False):
    """
    The values the preset `config` gives this command's options (`{}` without a preset); a missing or broken preset
    or a key that is no option is one line (`fail`). With `light` (options not imported yet): None when the options
    can only be known from the imported dataclasses (no stored table of Trainer's options for this transformers);
    the preset itself is still read.
    """
    unknown_yet = light and not table_serves(dataclass_types)
    if not config:
        return None if unknown_yet else {}
    try:
        preset = load_preset(config)
        return None if unknown_yet else preset_values_for(preset, command, spellings(dataclass_types), source)
    except PresetError as error:
        fail(str(error))


def _apply_preset(parser, values: dict):
    """Sets the preset's values as the parser's defaults; returns its `dataset_option` pairs and its `dataset`."""
    values = dict(values)
    options = values.pop("dataset_option", None) or []
    if values:
        parser.set_defaults(**values)
    return options, values.get("dataset")


def print_once(text: str) -> None:
    """
    Prints `text` from the main process of a launch only (`RANK` 0, or no launcher), then, under a launcher, tears down
    the process group that resolving `TrainingArguments` set up, before the interpreter exits (`--print_config`).
    """
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, flush=True)
    if "torch" not in sys.modules:  # nothing set a process group up (no Trainer options were resolved)
        return
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def require(args, *names: str) -> None:
    """Ends the command like argparse does (one line, status 2) when an option in `names` was not given."""
    missing = [name for name in names if not getattr(args, name)]
    if missing:
        fail(f"the following arguments are required: {', '.join('--' + name for name in missing)}")


def check_model_option(option: str, value) -> None:
    """
    Refuses a bad model location given as `--<option>` before anything is written or built: a local folder that is
    no checkpoint, a path that does not exist, a Hub id the Hub does not know (`resolve_model_location`), or, with
    `HF_HUB_OFFLINE=1`, a Hub id that is not in the local cache; one line naming the option. Unset and `none`
    (random initialisation) pass.
    """
    if value is None or str(value).lower() in ("", "none"):
        return
    from .checkpoints import resolve_model_location

    try:
        resolve_model_location(str(value))
    except OSError as error:
        raise type(error)(f"--{option}: {error}") from None
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not os.path.isdir(str(value)):
        if not isinstance(try_to_load_from_cache(str(value), "config.json"), str):
            raise FileNotFoundError(
                f"--{option}: {value} is not in the local Hub cache, and the Hub is off (HF_HUB_OFFLINE=1): "
                "download it once with a network, or give a local folder."
            )


def loader_options(args) -> dict:
    """The loader keyword arguments of a command: its `--dataset_option KEY=VALUE` pairs and its `--cache_dir`."""
    options = parse_key_values(args.dataset_option)
    if getattr(args, "cache_dir", None):
        options.setdefault("cache_dir", args.cache_dir)
    return options


def parse_key_values(options) -> dict:
    """
    Loader options from the command line: `["num_val=20", "image_size=64"]` -> `{"num_val": 20, "image_size": 64}`
    (values read as YAML scalars; a later pair wins); a mapping (e.g. from a YAML preset) passes through.
    """
    if isinstance(options, dict):
        return dict(options)
    parsed = {}
    for option in options or []:
        key, separator, value = str(option).partition("=")
        if not separator or not key.strip():
            raise ValueError(f"Expected KEY=VALUE, got {option!r}.")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def describe(*instances) -> str:
    """The resolved arguments as readable JSON (printed at start-up and saved next to the outputs)."""
    resolved = {}
    for instance in instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        resolved[type(instance).__name__] = values
        plan = getattr(instance, "train_batch_plan", None)  # `batching`: how this launch realises the recipe's batch
        if plan is not None:
            resolved["train_batch"] = plan.summary()
    return json.dumps(resolved, indent=2, default=str, sort_keys=True)
