# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""YAML presets of `cpfcte-hf`: `--config NAME_OR_PATH` gives a command's defaults, the command line wins.

Presets are YAML mappings shipped in the package (`cpfcte_hf/presets/<name>.yaml`, found by name) or any file
path. A preset may inherit from another (`base: shapes`: the base's values, then this file's). Flat keys are
settings of the preset's own command (`command: train_deeplab`; default `train`). A key that names a command
(`train`, `label`, `evaluate`, `train_deeplab` alias `train_segmenter`, `run`) holds a section for that command.
Any other command takes its section plus the shared data keys (`dataset`, `data_root`, `dataset_option`, ...) of
the flat part, so that one preset (e.g. `voc`) drives every step of `cpfcte-hf run`. Sections may inherit too
(`train_deeplab: {base: deeplab_voc}`). A key may be any spelling of an option (`data-root`, or an alias such as `out` or `root`: the
`aliases` of the option's field); a key that is no option of the command is an error naming the preset and the key.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from .precision import resolve_auto_bf16


PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
COMMAND_SECTIONS = ("train", "label", "evaluate", "train_deeplab", "train_segmenter", "run")
# Commands that are another's under a second name: a preset of either is read by both (`train-segmenter` is
# `train-deeplab` for any architecture; both read `command: train_deeplab` presets and `train_deeplab:` sections).
# A section under the second name is the first's (`train_segmenter:` is read as `train_deeplab:`; not both in one file).
COMMAND_ALIASES = {"train_segmenter": "train_deeplab"}
# Keys of a preset's flat part that every command with such an option takes, even when it has its own section.
SHARED_KEYS = ("dataset", "data_root", "dataset_option", "cache_dir", "train_split", "eval_split")


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


def canonical_sections(values: dict, origin) -> dict:
    """`values` (one preset file) with each section under a second name (`COMMAND_ALIASES`) under the first."""
    values = dict(values)
    for alias, name in COMMAND_ALIASES.items():
        if alias in values:
            if name in values:
                raise PresetError(f"Config preset {origin}: `{alias}:` and `{name}:` are the same section; keep one.")
            values[name] = values.pop(alias)
    return values


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


def preset_values_for(preset: dict, command: str | None, fields: Mapping[str, str] | set[str], source: str) -> dict:
    """
    The part of `preset` that `command` takes (see the module docstring), checked against the command's options
    `fields`: their names, or a mapping of every spelling (`out`, `data-root`: the fields' aliases) to its field's
    name, by which a preset's keys are read. A key that is no option is a `PresetError` naming `source` and the key.
    """
    names = dict(fields) if isinstance(fields, Mapping) else {name: name for name in fields}
    owner = COMMAND_ALIASES.get(preset.get("command", "train"), preset.get("command", "train"))
    plain = "command" not in preset and not any(key in preset for key in COMMAND_SECTIONS)
    if plain and command not in (None, "run"):
        # A plain preset (no `command:`, no sections) handed to a command is that command's: its keys are never
        # dropped silently because they are taken for stage 1's. `run` has no flat keys: its stage 1 has them.
        owner = command
    flat = _by_name({k: v for k, v in preset.items() if k not in (*COMMAND_SECTIONS, "command")}, names)
    section = preset.get(command) if command else None
    if command == owner or command is None:
        values = dict(flat)
    else:
        values = {key: flat[key] for key in SHARED_KEYS if key in flat and key in names.values()}
    if isinstance(section, dict):
        values.update(_by_name({key: value for key, value in section.items() if key != "command"}, names))
    if "bf16" in names.values():
        values = resolve_auto_bf16(values)
    unknown = sorted(set(values) - set(names.values()))
    if unknown:
        where = source if command == owner or command is None else f"{source} (section {command})"
        raise PresetError(
            f"Unknown key(s) in {where}: {', '.join(unknown)} (not an option of "
            f"`cpfcte-hf {(command or '').replace('_', '-')}`)."
        )
    return values


def _by_name(values: dict, names: Mapping[str, str]) -> dict:
    """`values` with every key that is another spelling of an option (`out`, `data-root`) under the option's name."""
    return {names.get(key, key): value for key, value in values.items()}


def key_value_list(options) -> list[str]:
    """Preset `dataset_option` (a list of KEY=VALUE or a mapping) as a list of KEY=VALUE strings."""
    if isinstance(options, dict):
        return [f"{key}={json.dumps(value)}" for key, value in options.items()]
    return [str(option) for option in options]


def preset_source(config) -> str:
    """The name messages give the preset `config` (`named_preset`), else `config` itself."""
    return _PRESET_NAMES.get(str(config), str(config))
