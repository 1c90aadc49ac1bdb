# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Command-line parsing shared by the scripts: `HfArgumentParser` over dataclasses, with YAML presets.

    python scripts/train.py --config scripts/configs/voc.yaml --learning_rate 5e-5

The YAML file gives defaults for any dataclass field (flat keys); anything on the command line wins. Unknown
keys in the YAML file are an error naming the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from transformers import HfArgumentParser


def load_preset(path: str | os.PathLike) -> dict:
    """A YAML preset as a flat dict; a clear error for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config preset not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"Config preset {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"Config preset {path} must be a mapping of field: value, got {type(values).__name__}.")
    return values


def parse_args_with_presets(dataclass_types: Sequence[type], args: Sequence[str] | None = None, description=None):
    """
    Parses `args` (default `sys.argv[1:]`) into instances of `dataclass_types`, with `--config preset.yaml`
    supplying defaults. Returns the tuple of dataclass instances.
    """
    args = list(sys.argv[1:] if args is None else args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, remaining = pre.parse_known_args(args)

    parser = HfArgumentParser(dataclass_types, description=description)
    parser.add_argument("--config", default=None, help="YAML preset giving defaults for any of the fields below")
    if known.config:
        preset = load_preset(known.config)
        fields = {f.name for dataclass_type in dataclass_types for f in dataclasses.fields(dataclass_type)}
        unknown = sorted(set(preset) - fields)
        if unknown:
            raise ValueError(f"Unknown key(s) in {known.config}: {', '.join(unknown)}.")
        parser.set_defaults(**preset)
    *outputs, unknown = parser.parse_args_into_dataclasses(args=remaining, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    # HfArgumentParser also returns a Namespace for arguments that are no dataclass field (here `--config`).
    return tuple(output for output in outputs if dataclasses.is_dataclass(output))


def parse_key_values(options) -> dict:
    """
    Loader options from the command line: `["num_val=20", "image_size=64"]` -> `{"num_val": 20, "image_size": 64}`
    (values read as YAML scalars); a mapping (e.g. from a YAML preset) passes through.
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
    return json.dumps(resolved, indent=2, default=str, sort_keys=True)
