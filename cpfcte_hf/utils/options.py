# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A command's options as `HfArgumentParser` makes them from its dataclass fields — every spelling (`--data_root`,
`--data-root`, the `aliases` of the field's metadata, `--no_<flag>` for a flag that defaults to true), the value
type, `nargs`, the choices — read without importing transformers, torch or datasets.

The field metadata is the one table of option names: `--help`, the check of misspelt options and bad values
(`utils.help`), the preset keys (`utils.presets`) and the real parse (`utils.arguments.build_parser`) all read it.
A dataclass that lives in a heavy module (`TrainingArguments`) is named as `LazyArguments("module:Class", heading)`;
its options are read from `lazy_options.json`, written from the real dataclass by `write_lazy_table()` (a test checks
that the file matches it).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import importlib
import importlib.metadata
import inspect
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


LAZY_TABLE = Path(__file__).with_name("lazy_options.json")


@dataclass(frozen=True)
class LazyArguments:
    """A dataclass of options imported only when needed: `"package.module:ClassName"`."""

    target: str
    heading: str

    def load(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def specs(self) -> list[dict] | None:
        """Its options as stored in `lazy_options.json` (None when the file does not hold them)."""
        return _lazy_table().get("classes", {}).get(self.target)

    def defaults(self) -> dict[str, object]:
        """The stored defaults of its options (those that JSON can hold), by field name."""
        return {spec["name"]: spec["default"] for spec in self.specs() or [] if "default" in spec}


def table_versions(table: dict) -> list[str]:
    """The transformers versions a table was written for: each one whose options and facts were found the same."""
    versions = table.get("transformers") or []
    return [versions] if isinstance(versions, str) else list(versions)


@functools.cache
def _lazy_table() -> dict:
    """The stored table; empty when it is missing or was not written for the installed transformers (then the real
    parse alone checks Trainer's options)."""
    if not LAZY_TABLE.is_file():
        return {}
    table = json.loads(LAZY_TABLE.read_text(encoding="utf-8"))
    try:
        installed = importlib.metadata.version("transformers")  # the package's metadata: transformers not imported
    except importlib.metadata.PackageNotFoundError:
        return {}
    return table if installed in table_versions(table) else {}


def is_lazy(dataclass_type) -> bool:
    return isinstance(dataclass_type, LazyArguments)


def table_serves(dataclass_types: Sequence) -> bool:
    """Whether every `LazyArguments` among `dataclass_types` has its options in the stored table (written for the
    installed transformers): only then can the front door check and build them without importing it."""
    return all(t.specs() for t in dataclass_types if is_lazy(t))


def resolve(dataclass_types: Sequence) -> tuple[type, ...]:
    """The dataclass types, with every `LazyArguments` imported."""
    return tuple(t.load() if is_lazy(t) else t for t in dataclass_types)


class RepeatableList(argparse.Action):
    """
    A list option that may be repeated: `--dataset_option a=1 b=2 --dataset_option c=3` gives `[a=1, b=2, c=3]`. The
    command line's values replace the default (a preset's list included); `"action": RepeatableList` in the field's
    metadata (`HfArgumentParser` passes it on, with `nargs="+"`).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        earlier = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, earlier + list(values))


def string_to_bool(value) -> bool:
    """A flag's value as `HfArgumentParser` reads it (yes/no, true/false, t/f, y/n, 1/0, any case)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive)."
    )


# What a spec's "type" converts with; any other type is checked by the real parse only.
CONVERTERS = {"str": str, "int": int, "float": float, "bool": string_to_bool}


def both_spellings(option: str) -> list[str]:
    """`--data_root` -> `[--data_root, --data-root]` (one name when there is no underscore or dash)."""
    name = option[2:].replace("-", "_")
    return list(dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"]))


def _aliases(field: dataclasses.Field) -> list[str]:
    aliases = field.metadata.get("aliases", [])
    return [aliases] if isinstance(aliases, str) else list(aliases)


def _value_type(field_type):
    """The type `HfArgumentParser` converts a value to: `X | None` -> X, `X | str` -> X (not `bool | None`)."""
    if typing.get_origin(field_type) in (typing.Union, types.UnionType):
        args = typing.get_args(field_type)
        if type(None) not in args:
            return args[0] if args[1] is str else args[1]
        if bool not in args:
            return args[0] if args[1] is type(None) else args[1]
    return field_type


def field_spec(field: dataclasses.Field, field_type) -> dict:
    """
    The option of one field as `HfArgumentParser` adds it: `name`, `options` (its spellings), `negative` (the
    `--no_` spellings of a flag that defaults to true, and of its aliases), `type` (a name of `CONVERTERS` or
    another type's name), `nargs`, `choices` (as strings), `repeatable`.
    """
    value_type = _value_type(field_type)
    origin = typing.get_origin(value_type) or value_type
    spec = {"name": field.name, "options": [f"--{field.name}"], "negative": [], "type": "str"}
    spec["options"] += [f"--{field.name.replace('_', '-')}"] if "_" in field.name else []
    spec["options"] += _aliases(field)
    choices = field.metadata.get("choices")  # argparse's own keywords in the metadata are passed on
    spec.update(nargs=field.metadata.get("nargs"), choices=None if choices is None else [str(c) for c in choices])
    spec["repeatable"] = field.metadata.get("action") is RepeatableList
    if origin is typing.Literal or (inspect.isclass(value_type) and issubclass(value_type, enum.Enum)):
        values = typing.get_args(value_type) if origin is typing.Literal else [item.value for item in value_type]
        spec["choices"] = [str(value) for value in values]
    elif value_type is bool or value_type == bool | None:
        # `--flag` alone means true, unless the flag is `bool | None` without a default (then it takes a value)
        takes_none = value_type is not bool and field.default in (None, dataclasses.MISSING)
        spec.update(type="bool", nargs=spec["nargs"] if takes_none else "?")
        if field.default is True:
            spec["negative"] = list(dict.fromkeys(n for a in spec["options"][:1] + _aliases(field) for n in _no(a)))
    elif inspect.isclass(origin) and issubclass(origin, list):
        (item,) = typing.get_args(value_type) or (str,)
        spec.update(type=getattr(item, "__name__", "str"), nargs="+")
    else:
        spec["type"] = getattr(value_type, "__name__", "str")
    return spec


def _no(option: str) -> list[str]:
    name = option[2:].replace("-", "_")
    return [f"--no_{name}", f"--no-{name.replace('_', '-')}"]


def field_specs(dataclass_type) -> list[dict]:
    """The specs (`field_spec`) of a dataclass's init fields; a `LazyArguments` gives its stored ones (or [])."""
    if is_lazy(dataclass_type):
        return dataclass_type.specs() or []
    hints = typing.get_type_hints(dataclass_type)
    return [field_spec(f, hints.get(f.name, str)) for f in dataclasses.fields(dataclass_type) if f.init]


def spellings(dataclass_types: Sequence) -> dict[str, str]:
    """Every spelling of every option of `dataclass_types`, without `--` (`data-root`, `out`) -> its field's name."""
    return {option[2:]: spec["name"] for t in dataclass_types for spec in field_specs(t) for option in spec["options"]}


def add_spec(parser, spec: dict, **kwargs) -> None:
    """Adds the option of `spec` to an argparse parser (or group), as `HfArgumentParser` would (values checked)."""
    kwargs.setdefault("type", CONVERTERS.get(spec["type"], str))
    if spec["type"] == "bool" and spec["nargs"] == "?":
        kwargs.update(nargs="?", const=True)
    elif spec["nargs"]:
        kwargs.update(nargs=spec["nargs"], action=RepeatableList if spec["repeatable"] else "store")
    parser.add_argument(*spec["options"], dest=spec["name"], choices=spec["choices"], **kwargs)
    if spec["negative"]:
        parser.add_argument(*spec["negative"], dest=spec["name"], action="store_false", default=argparse.SUPPRESS)


def _stored_default(field: dataclasses.Field) -> dict:
    """`{"default": value}` for a field whose default JSON holds as it is (an enum by its value); else `{}`."""
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if isinstance(default, enum.Enum):
        default = default.value
    if default is None or isinstance(default, (bool, int, float, str)):
        return {"default": default}
    if isinstance(default, (list, tuple)) and all(isinstance(item, (bool, int, float, str)) for item in default):
        return {"default": list(default)}
    return {}


def stored_specs(dataclass_type) -> list[dict]:
    """What `lazy_options.json` holds of a dataclass: its `field_specs`, each with its default where JSON holds it
    (the front door builds the options it checks from them: `utils.help.light_instances`)."""
    by_name = {f.name: f for f in dataclasses.fields(dataclass_type)}
    return [{**spec, **_stored_default(by_name[spec["name"]])} for spec in field_specs(dataclass_type)]


def stored_fact(name: str):
    """A fact about the installed transformers that the table stores besides the options (e.g. the architectures
    `AutoModelForSemanticSegmentation` maps); None when the table does not hold it for this transformers."""
    return _lazy_table().get("facts", {}).get(name)


def write_lazy_table(targets: Sequence[str], facts: dict | None = None) -> dict:
    """Writes the specs of the `LazyArguments` targets (imported: needs transformers) and the `facts` (JSON values,
    `stored_fact`) to `lazy_options.json`, for the installed transformers. Where the table there holds the same
    options and facts for other versions, it keeps them: the table then serves each of them."""
    import transformers
    from packaging.version import Version

    table = {"transformers": [transformers.__version__], "facts": dict(facts or {}), "classes": {}}
    for target in targets:
        table["classes"][target] = stored_specs(LazyArguments(target, "").load())
    if LAZY_TABLE.is_file():
        old = json.loads(LAZY_TABLE.read_text(encoding="utf-8"))
        if (old.get("facts"), old.get("classes")) == (table["facts"], table["classes"]):
            versions = set(table_versions(old)) | {transformers.__version__}
            table["transformers"] = sorted(versions, key=Version)
    classes = ",\n".join(
        f"  {json.dumps(target)}: [\n" + ",\n".join(f"   {json.dumps(spec)}" for spec in specs) + "\n  ]"
        for target, specs in table["classes"].items()
    )  # one option a line
    facts = json.dumps(table["facts"], sort_keys=True)
    text = (
        f'{{\n "transformers": {json.dumps(table["transformers"])},\n "facts": {facts},\n'
        f' "classes": {{\n{classes}\n }}\n}}\n'
    )
    LAZY_TABLE.write_text(text, encoding="utf-8")
    _lazy_table.cache_clear()
    return table


def build_from_options(config_type, options, prefixes: tuple[str, ...] = ("",), **values):
    """
    A settings dataclass (`config_type`) built from a command's options (`options`, a dataclass instance): each of its
    fields takes the first option named `prefix + name` for `prefix` in `prefixes` (`aug_brightness` for
    `AugmentationConfig.brightness`), lists as tuples; `values` win. Fields without an option keep their defaults.
    The one place where options become the configs the library takes, instead of field-by-field copies.
    """
    given = {}
    for config_field in dataclasses.fields(config_type):
        option = next((p + config_field.name for p in prefixes if hasattr(options, p + config_field.name)), None)
        if option is not None:
            value = getattr(options, option)
            given[config_field.name] = tuple(value) if isinstance(value, list) else value
    return config_type(**{**given, **values})


def with_aliases(dataclass_type, name: str, *aliases: str) -> dataclasses.Field:
    """
    A field of a subclass of `dataclass_type` that redeclares its field `name` with the same default and metadata,
    plus `aliases` (e.g. `--out` for `TrainingArguments.output_dir`).
    """
    inherited = {f.name: f for f in dataclasses.fields(dataclass_type)}[name]
    metadata = {**inherited.metadata, "aliases": [*_aliases(inherited), *aliases]}
    if inherited.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=inherited.default_factory, metadata=metadata)
    return dataclasses.field(default=inherited.default, metadata=metadata)
