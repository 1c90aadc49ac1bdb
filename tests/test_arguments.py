"""One table of option names: the fields' metadata (`aliases`, `RepeatableList`) is what `--help`, the front door's
checks, the preset keys and `HfArgumentParser` all read — no argv rewriting."""

import argparse
import json
import warnings

import pytest

from cpfcte_hf.cli.commands import evaluate as evaluate_command
from cpfcte_hf.cli.commands import export as export_command
from cpfcte_hf.cli.commands import label as label_command
from cpfcte_hf.cli.commands import push as push_command
from cpfcte_hf.cli.commands import train as train_command
from cpfcte_hf.cli.main import main
from cpfcte_hf.cli.options_table import lazy_targets
from cpfcte_hf.stage2 import arguments as stage2_arguments
from cpfcte_hf.utils.arguments import BothSpellingsParser, build_parser, parse_plain_args
from cpfcte_hf.utils.options import LAZY_TABLE, field_specs, resolve, stored_specs
from cpfcte_hf.workflows import run as run_command


COMMAND_TYPES = {
    "train": train_command.ARGUMENT_TYPES,
    "label": label_command.ARGUMENT_TYPES,
    "evaluate": (evaluate_command.EvaluateArguments,),
    "train-deeplab": stage2_arguments.ARGUMENT_TYPES,
    "push": (push_command.PushArguments,),
    "export": (export_command.ExportArguments,),
    "run": (run_command.RunArguments,),
}


def _real_options(parser) -> dict:
    """`--option` -> (dest, value type, nargs, choices) of every action of a real `HfArgumentParser`."""
    options = {}
    for action in parser._actions:  # read only, to compare with the front door's table
        flag_off = action.nargs == 0 and action.const is False  # store_false
        kind = "flag-off" if flag_off else getattr(action.type, "__name__", None)
        kind = {"string_to_bool": "bool", "<lambda>": "str"}.get(kind, kind)
        choices = None if action.choices is None else [str(choice) for choice in action.choices]
        for option in action.option_strings:
            options[option] = (action.dest, kind, action.nargs if kind != "flag-off" else 0, choices)
    return options


def _front_door_options(dataclass_types) -> dict:
    options = {}
    for dataclass_type in dataclass_types:
        for spec in field_specs(dataclass_type):
            for option in spec["options"]:
                options[option] = (spec["name"], spec["type"], spec["nargs"], spec["choices"])
            for option in spec["negative"]:
                options[option] = (spec["name"], "flag-off", 0, None)
    return options


@pytest.mark.parametrize("command", sorted(COMMAND_TYPES))
def test_the_front_door_reads_the_options_hfargumentparser_makes(command):
    """Every spelling, value type, nargs and choice the real parser takes is the front door's (stored for Trainer's)."""
    dataclass_types = COMMAND_TYPES[command]
    real = _real_options(build_parser(resolve(dataclass_types)))
    for common in ("-h", "--help", "--config", "--print_config", "--print-config"):
        real.pop(common, None)
    assert _front_door_options(dataclass_types) == real


def test_the_stored_trainer_options_are_those_of_the_installed_transformers():
    from cpfcte_hf.cli.options_table import stored_facts
    from cpfcte_hf.utils.options import LazyArguments

    assert json.loads(LAZY_TABLE.read_text())["facts"] == stored_facts()
    stored = json.loads(LAZY_TABLE.read_text())["classes"]
    assert sorted(stored) == lazy_targets()
    for target in lazy_targets():
        assert stored[target] == stored_specs(resolve([LazyArguments(target, "")])[0]), (
            f"{LAZY_TABLE.name} is out of date for {target}: rewrite it with `python -m cpfcte_hf.cli.options_table`."
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataset_option", "a=1", "--dataset_option", "b=2"],
        ["--dataset_option", "a=1", "b=2"],
        ["--dataset-option=a=1", "--dataset_options", "b=2"],
    ],
)
def test_a_repeated_list_option_and_one_with_several_values_give_the_same_list(argv):
    args, _ = label_command.parse_arguments(argv)
    assert args.dataset_option == ["a=1", "b=2"]


def test_the_command_line_list_replaces_the_presets(tmp_path):
    preset = tmp_path / "evaluate.yaml"
    preset.write_text("command: evaluate\npred: [from_preset]\nout: report\n")
    (args,) = evaluate_command.parse_arguments(["--config", str(preset)])
    assert args.pred == ["from_preset"] and args.output_dir == "report"  # a preset key may be an alias
    (args,) = evaluate_command.parse_arguments(["--config", str(preset), "--pred", "a", "--pred", "b"])
    assert args.pred == ["a", "b"]


def test_preset_keys_may_be_any_spelling_of_an_option(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: shapes\nroot: /voc\nmodel: runs/x\nlabel:\n  out: /pseudo\n  data-root: /photos\n")
    model_args, data_args, _ = train_command.parse_arguments(["--config", str(preset), "--use_cpu"])
    assert data_args.data_root == "/voc" and model_args.model_name_or_path == "runs/x"
    args, _ = label_command.parse_arguments(["--config", str(preset)])
    assert args.output_dir == "/pseudo" and args.data_root == "/photos"


def test_help_lists_the_aliases(capsys):
    assert main(["label", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--root" in out and "--dataset_options" in out and "--no_label_masking" in out
    assert main(["train", "--help"]) == 0
    assert "--model STR" in capsys.readouterr().out.replace(",", "")


@pytest.mark.parametrize("argv", [["--learning_rat", "1"], ["--per_device_train"]])
def test_abbreviations_are_refused_as_the_front_door_refuses_them(argv, capsys):
    assert main(["train", *argv]) == 2
    assert "unrecognised arguments: " + argv[0] in capsys.readouterr().err


def test_a_bad_value_of_a_trainer_option_is_one_line(capsys):
    assert main(["train", "--learning_rate", "abc"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: argument --learning_rate") and "invalid float value: 'abc'" in error
    assert main(["train", "--lr_scheduler_type", "sideways"]) == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_plain_parsers_take_both_spellings_without_touching_argparse_internals():
    parser = BothSpellingsParser()
    parser.add_argument("--batch-size", "-b", type=int)
    assert parse_plain_args(parser, ["--batch_size", "3"]).batch_size == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from cpfcte_hf.cli import accept_both_spellings, normalize_argv
    plain = argparse.ArgumentParser()
    plain.add_argument("--batch-size", type=int)
    plain.add_argument("--dry_run", action="store_true")
    args = accept_both_spellings(plain).parse_args(["--batch_size", "3", "--dry-run"])
    assert (args.batch_size, args.dry_run) == (3, True)
    assert normalize_argv(["--data-root", "x", "--out", "y"]) == ["--data_root", "x", "--output_dir", "y"]


def test_a_table_written_for_another_transformers_is_not_used(tmp_path, monkeypatch):
    from cpfcte_hf.stage1.arguments import TRAINER_OPTIONS
    from cpfcte_hf.utils import options

    stale = tmp_path / "lazy_options.json"
    stale.write_text(json.dumps({**json.loads(LAZY_TABLE.read_text()), "transformers": "0.0.1"}))
    monkeypatch.setattr(options, "LAZY_TABLE", stale)
    options._lazy_table.cache_clear()
    try:
        assert TRAINER_OPTIONS.specs() is None  # the real parse alone checks Trainer's options then
        assert options.stored_fact("segmenter_model_types") is None
        # the early checks step aside: no options built without transformers; the command's start checks all
        assert stage2_arguments.parse_arguments(["--dataset", "shapes"], light=True) is None
        assert train_command.parse_arguments(["--dataset", "shapes"], light=True) is None
        assert main(["train-deeplab", "--dataset", "shapes", "--pseudo_labels", str(tmp_path / "nowhere")]) == 2
    finally:
        monkeypatch.undo()
        options._lazy_table.cache_clear()
    assert TRAINER_OPTIONS.specs()


def test_rewriting_the_table_keeps_the_versions_whose_options_are_the_same(tmp_path, monkeypatch):
    """`python -m cpfcte_hf.cli.options_table` after a transformers upgrade: where the new release's options and
    facts are those of the table, the table serves both releases; where they differ, only the new one."""
    import transformers

    from cpfcte_hf.cli.options_table import stored_facts
    from cpfcte_hf.utils import options

    table = tmp_path / "lazy_options.json"
    table.write_text(json.dumps({**json.loads(LAZY_TABLE.read_text()), "transformers": "5.0.0"}))
    monkeypatch.setattr(options, "LAZY_TABLE", table)
    options._lazy_table.cache_clear()
    try:
        options.write_lazy_table(lazy_targets(), stored_facts())
        assert json.loads(table.read_text())["transformers"] == ["5.0.0", transformers.__version__]
        assert options.stored_fact("segmenter_model_types") == stored_facts()["segmenter_model_types"]
        changed = json.loads(table.read_text())
        changed["facts"]["segmenter_model_types"] = ["deeplab_v2"]  # what another release would have mapped
        table.write_text(json.dumps(changed))
        options.write_lazy_table(lazy_targets(), stored_facts())
        assert json.loads(table.read_text())["transformers"] == [transformers.__version__]
    finally:
        monkeypatch.undo()
        options._lazy_table.cache_clear()


@pytest.mark.parametrize(
    "options, config, prefixes, without",
    [
        (
            "cpfcte_hf.cli.commands.label:LabelArguments",
            "cpfcte_hf.prediction.config:PseudoLabelConfig",
            ("",),
            {"crf_config"},
        ),
        (
            "cpfcte_hf.stage2.arguments:DeepLabTestArguments",
            "cpfcte_hf.prediction.config:MultiScaleEvalConfig",
            ("test_", ""),
            {"crf_config", "overwrite", "progress"},
        ),
        (
            "cpfcte_hf.stage1.arguments:DataArguments",
            "cpfcte_hf.data.augmentation:AugmentationConfig",
            ("aug_",),
            {"colour_jitter_p"},
        ),
    ],
)
def test_configs_are_built_from_the_options_by_name(options, config, prefixes, without):
    """`build_from_options` fills a config from a command's options by field name: every field of the config has its
    option (or is named here as set otherwise), so a new setting cannot be dropped on the way."""
    import dataclasses
    import importlib

    from cpfcte_hf.utils.options import build_from_options

    def load(spec):
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)

    option_names = {f.name for f in dataclasses.fields(load(options))}
    config_type = load(config)
    missing = {
        f.name for f in dataclasses.fields(config_type) if not any(p + f.name in option_names for p in prefixes)
    }
    assert missing == without
    defaults = config_type()
    instance = type("Options", (), {prefixes[0] + "contrast": [0.9, 1.1], prefixes[-1] + "hflip_p": 0.25})()
    values = {"brightness": 0.0} if hasattr(defaults, "brightness") else {"num_overlays": 7}
    built = build_from_options(config_type, instance, prefixes, **values)
    for name, value in values.items():
        assert getattr(built, name) == value
    for f in dataclasses.fields(config_type):
        if f.name not in values and not any(hasattr(instance, p + f.name) for p in prefixes):
            assert getattr(built, f.name) == getattr(defaults, f.name)
    if hasattr(defaults, "contrast"):
        assert built.contrast == (0.9, 1.1) and built.hflip_p == 0.25
