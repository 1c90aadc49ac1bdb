# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one option vocabulary of `cpfcte-hf`: `HfArgumentParser` over dataclasses, with YAML presets.

    cpfcte-hf train --config voc --learning_rate 5e-5
    cpfcte-hf train --config my_preset.yaml --print_config

Presets are YAML mappings shipped in the package (`cpfcte_hf/presets/<name>.yaml`, found by name) or any file
path. A preset may inherit from another (`base: shapes`: the base's values, then this file's). Flat keys are
settings of the preset's own command (`command: train_deeplab`; default `train`). A key that names a command
(`train`, `label`, `evaluate`, `train_deeplab` alias `train_segmenter`, `run`) holds a section for that command.
Any other command takes its section plus the shared data keys (`dataset`, `data_root`, `dataset_option`, ...) of
the flat part, so that one preset (e.g. `voc`) drives every step of `cpfcte-hf run`. Sections may inherit too (`train_deeplab: {base:
deeplab_voc}`). A key that is no option of the command is an error naming the preset and the key; the command
line always wins.

Every option takes both spellings (`--data_root` / `--data-root`); a few older names are aliases (`--out` for
`--output_dir`, `--root` for `--data_root`, `--demo_dir` for `--output_dir`, `--model` for `--model_name_or_path`). `--dataset_option` takes several
KEY=VALUE pairs and may be repeated; its pairs are added to the preset's (the last value of a key wins), unless
`--dataset` names another dataset than the preset's.
`--print_config` prints the resolved settings (preset + command line) and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from .help import did_you_mean, format_help, is_lazy, resolve, unknown_options


PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
COMMAND_SECTIONS = ("train", "label", "evaluate", "train_deeplab", "train_segmenter", "run")
# Commands that are another's under a second name: a preset of either is read by both (`train-segmenter` is
# `train-deeplab` for any architecture; both read `command: train_deeplab` presets and `train_deeplab:` sections).
# A section under the second name is the first's (`train_segmenter:` is read as `train_deeplab:`; not both in one file).
COMMAND_ALIASES = {"train_segmenter": "train_deeplab"}


def canonical_sections(values: dict, origin) -> dict:
    """`values` (one preset file) with each section under a second name (`COMMAND_ALIASES`) under the first."""
    values = dict(values)
    for alias, name in COMMAND_ALIASES.items():
        if alias in values:
            if name in values:
                raise PresetError(f"Config preset {origin}: `{alias}:` and `{name}:` are the same section; keep one.")
            values[name] = values.pop(alias)
    return values


# Keys of a preset's flat part that every command with such an option takes, even when it has its own section.
SHARED_KEYS = ("dataset", "data_root", "dataset_option", "cache_dir", "train_split", "eval_split")
# Older option names, kept working: old -> the option they stand for (after dashes became underscores).
OPTION_ALIASES = {
    "--out": "--output_dir",
    "--root": "--data_root",
    "--demo_dir": "--output_dir",
    "--dataset_options": "--dataset_option",
    "--no_label_masking": "--no_use_image_labels",
}
# Aliases for commands that lack an option of that name (`--model` is `--model_name_or_path` for train, train-deeplab).
FALLBACK_ALIASES = {"--model": "--model_name_or_path"}
REPEATABLE_LISTS = ("--dataset_option", "--results", "--pred", "--override")


class PresetError(ValueError):
    """A preset that cannot be used: missing, not YAML, not a mapping, an unknown key, a cycle of `base`."""


class PresetNotFound(PresetError, FileNotFoundError):
    """No file and no packaged preset of that name."""


_PRESET_NAMES: dict[str, str] = {}  # preset file -> the name messages give it (`named_preset`)


@contextlib.contextmanager
def named_preset(path: str | os.PathLike, name: str):
    """
    Within the block, messages about the preset file `path` call it `name`: `cpfcte-hf run` checks its steps
    against a temporary copy of the preset it resolved, and its messages name the preset the user gave.
    """
    _PRESET_NAMES[str(path)] = name
    try:
        yield
    finally:
        _PRESET_NAMES.pop(str(path), None)


def available_presets() -> list[str]:
    """Names of the presets shipped in the package."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """
    The file of a preset: an existing path (relative to `relative_to` first, for `base:`), else the packaged
    `presets/<name>.yaml`. A clear error lists the packaged names.
    """
    candidate = Path(name_or_path).expanduser()
    candidates = [candidate] if candidate.is_absolute() else [Path(relative_to or ".") / candidate, candidate]
    for path in candidates:
        if path.is_file():
            return path
    packaged = PRESET_DIR / f"{candidate.name}.yaml" if candidate.suffix not in (".yaml", ".yml") else None
    if packaged is not None and packaged.is_file():
        return packaged
    raise PresetNotFound(
        f"Config preset not found: {name_or_path} (neither a file nor a packaged preset; "
        f"packaged: {', '.join(available_presets())})"
    )


def _read_mapping(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise PresetError(f"Config preset {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise PresetError(f"Config preset {path} must be a mapping of field: value, got {type(values).__name__}.")
    return values


def _merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`; command sections are merged key by key, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key in COMMAND_SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_bases(values: dict, origin: Path, chain: tuple[Path, ...]) -> dict:
    """Expands `base:` in `values` and in its command sections (recursively, cycles are an error)."""
    values = canonical_sections(values, origin)
    base_name = values.pop("base", None)
    for section in COMMAND_SECTIONS:
        if isinstance(values.get(section), dict):
            values[section] = _resolve_bases(values[section], origin, chain)
    if base_name is None:
        return values
    base_path = resolve_preset(str(base_name), relative_to=origin.parent).resolve()
    if base_path in chain:
        raise PresetError(f"Config preset {origin}: `base: {base_name}` makes a cycle ({base_path}).")
    base = _resolve_bases(_read_mapping(base_path), base_path, (*chain, base_path))
    return _merge(base, values)


def load_preset(name_or_path: str | os.PathLike) -> dict:
    """A preset (packaged name or path) as a dict, with every `base:` expanded."""
    path = resolve_preset(name_or_path).resolve()
    return _resolve_bases(_read_mapping(path), path, (path,))


def preset_values_for(preset: dict, command: str | None, fields: set[str], source: str) -> dict:
    """
    The part of `preset` that `command` takes (see the module docstring), checked against the command's option
    names `fields`: a key that is no option is a `PresetError` naming `source` and the key.
    """
    owner = COMMAND_ALIASES.get(preset.get("command", "train"), preset.get("command", "train"))
    plain = "command" not in preset and not any(key in preset for key in COMMAND_SECTIONS)
    if plain and command not in (None, "run"):
        # A plain preset (no `command:`, no sections) handed to a command is that command's: its keys are never
        # dropped silently because they are taken for stage 1's. `run` has no flat keys: its stage 1 has them.
        owner = command
    flat = {key: value for key, value in preset.items() if key not in (*COMMAND_SECTIONS, "command")}
    section = preset.get(command) if command else None
    if command == owner or command is None:
        values = dict(flat)
    else:
        values = {key: flat[key] for key in SHARED_KEYS if key in flat and key in fields}
    if isinstance(section, dict):
        values.update({key: value for key, value in section.items() if key != "command"})
    unknown = sorted(set(values) - fields)
    if unknown:
        where = source if command == owner or command is None else f"{source} (section {command})"
        raise PresetError(
            f"Unknown key(s) in {where}: {', '.join(unknown)} (not an option of "
            f"`cpfcte-hf {(command or '').replace('_', '-')}`)."
        )
    return values


def normalize_argv(args: Sequence[str]) -> list[str]:
    """
    Long options with underscores (`--data-root` -> `--data_root`), old names replaced by their aliases, and the
    pairs of every `--dataset_option` gathered behind one flag (the flag may be repeated).
    """
    normalized: list[str] = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, equals, value = arg.partition("=")
            name = "--" + name[2:].replace("-", "_")
            name = OPTION_ALIASES.get(name, name)
            arg = name + equals + value
        normalized.append(arg)
    for flag in REPEATABLE_LISTS:
        normalized = _gather_list_option(normalized, flag)
    return normalized


def _gather_list_option(args: list[str], flag: str) -> list[str]:
    values, rest, index, found = [], [], 0, False
    while index < len(args):
        arg = args[index]
        if arg == flag:
            found = True
            index += 1
            while index < len(args) and not args[index].startswith("--"):
                values.append(args[index])
                index += 1
            continue
        if arg.startswith(flag + "="):
            found = True
            values.append(arg.partition("=")[2])
        else:
            rest.append(arg)
        index += 1
    return [*rest, flag, *values] if found else rest


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Gives every long option of a plain argparse parser its other spelling (`--batch-size` / `--batch_size`)."""
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            for other in ("--" + option[2:].replace("-", "_"), "--" + option[2:].replace("_", "-")):
                if other not in parser._option_string_actions:
                    parser._option_string_actions[other] = action
                    action.option_strings.append(other)
    return parser


def parse_plain_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    Parses `argv` with a plain argparse parser (the benchmarks) in the same vocabulary as the other commands: both
    spellings of every option, and `--print_config` printing the resolved options and exiting.
    """
    parser.add_argument("--print_config", action="store_true", help="Print the resolved settings and exit")
    accept_both_spellings(parser)
    args = parser.parse_args(argv)
    if args.print_config:
        print(json.dumps({key: value for key, value in vars(args).items() if key != "print_config"}, indent=2))
        raise SystemExit(0)
    return args


def option_fields(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for dataclass_type in dataclass_types for f in dataclasses.fields(dataclass_type) if f.init}


def parse_args_with_presets(
    dataclass_types: Sequence[type],
    args: Sequence[str] | None = None,
    description: str | None = None,
    command: str | None = None,
    prog: str | None = None,
):
    """
    Parses `args` (default `sys.argv[1:]`) into instances of `dataclass_types`, with `--config PRESET` supplying
    defaults (see the module docstring). Returns the tuple of dataclass instances.

    `--print_config` prints the resolved instances as JSON and exits (status 0). A preset error prints one line
    (`error: ...`) and exits with status 2.
    """
    args = normalize_argv(sys.argv[1:] if args is None else args)
    # The front door: help and misspelt options are answered from the dataclasses alone (no transformers, no torch).
    if any(arg in ("-h", "--help", "--help_all") for arg in args):
        print(format_help(dataclass_types, prog, description, show_all="--help_all" in args), end="")
        raise SystemExit(0)
    if not any(is_lazy(t) for t in dataclass_types):
        extra = ["--config", "--print_config", *FALLBACK_ALIASES]
        unknown = unknown_options(args, dataclass_types, extra)
        if unknown:
            fail(
                f"unrecognised arguments: {unknown[0]}{did_you_mean(unknown[0], dataclass_types, extra)} (see --help)"
            )
    dataclass_types = resolve(dataclass_types)
    from transformers import HfArgumentParser

    from .distributed import cpu_processes_use_gloo

    cpu_processes_use_gloo()
    parser = HfArgumentParser(dataclass_types, description=description, prog=prog)
    for target in (parser, pre := argparse.ArgumentParser(add_help=False)):
        target.add_argument("--config", default=None, help="Preset: a packaged name (voc, shapes, ...) or a YAML path")
        target.add_argument("--print_config", action="store_true", help="Print the resolved settings and exit")
    known, _ = pre.parse_known_args(args)
    for alias, option in FALLBACK_ALIASES.items():  # e.g. `--model` where the option is `--model_name_or_path`
        if alias not in parser._option_string_actions and option in parser._option_string_actions:
            args = [option + arg[len(alias) :] if arg.split("=")[0] == alias else arg for arg in args]
    fields = option_fields(dataclass_types)
    preset_options: list = []
    source = _PRESET_NAMES.get(str(known.config), str(known.config))
    if known.config:
        try:
            values = preset_values_for(load_preset(known.config), command, fields, source)
        except PresetError as error:
            fail(str(error))
        preset_options = values.pop("dataset_option", None) or []
        preset_dataset = values.get("dataset")
        parser.set_defaults(**values)
    try:
        *outputs, unknown = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    except ValueError as error:  # a dataclass refusing its values (e.g. bf16 without a GPU): one line
        where = f" (preset {source})" if known.config else ""
        fail(f"{error}{where}")
    if unknown:
        fail(f"unrecognised arguments: {' '.join(unknown)} (see --help)")
    instances = tuple(output for output in outputs if dataclasses.is_dataclass(output))
    if preset_options:
        for instance in instances:
            # The preset's loader options belong to its dataset: another --dataset on the command line drops them.
            if hasattr(instance, "dataset_option") and getattr(instance, "dataset", None) == preset_dataset:
                instance.dataset_option = _key_value_list(preset_options) + list(instance.dataset_option or [])
    if known.print_config:
        print_once(describe(*instances))
        raise SystemExit(0)
    return instances


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


def _key_value_list(options) -> list[str]:
    """Preset `dataset_option` (a list of KEY=VALUE or a mapping) as a list of KEY=VALUE strings."""
    if isinstance(options, dict):
        return [f"{key}={json.dumps(value)}" for key, value in options.items()]
    return [str(option) for option in options]


def print_error(error: BaseException | str) -> None:
    """`error: <message>` on stderr, on one line: a library's message that spans several is joined."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: {' '.join(lines) or type(error).__name__}", file=sys.stderr, flush=True)


def fail(message: str, status: int = 2):
    """Ends a command with one line on stderr, no traceback."""
    print_error(message)
    raise SystemExit(status)


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
