"""The `cpfcte-hf` front door: subcommands, one option vocabulary, packaged presets with inheritance, --print_config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cpfcte_hf.cli.commands import label as label_command
from cpfcte_hf.cli.commands import train as train_command
from cpfcte_hf.cli.main import COMMANDS, main
from cpfcte_hf.utils.arguments import (
    BothSpellingsParser,
    PresetError,
    available_presets,
    load_preset,
    parse_key_values,
    parse_plain_args,
)
from tests.utils import subprocess_env


REPO = Path(__file__).resolve().parents[1]


def test_module_entry_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "cpfcte_hf", "--help"], capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr
    names = (
        "train", "label", "evaluate", "train-deeplab", "train-segmenter", "push", "export", "run",
        "make-voc-rehearsal", "demo", "app", "bench", "reproduce",
    )  # fmt: skip
    for name in names:
        assert f"  {name} " in result.stdout
    assert set(COMMANDS) == set(names)


def test_unknown_command_is_one_clear_error(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [["train"], ["label"], ["evaluate"], ["train-deeplab"], ["push"], ["run", "--config", "shapes"], ["demo"]],
)
def test_every_command_prints_its_resolved_config(command, capsys):
    assert main([*command, "--print_config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved and all(isinstance(values, dict) for values in resolved.values())


def test_both_spellings_aliases_and_repeatable_dataset_options():
    args, crf = label_command.parse_arguments(
        [
            "--model", "m", "--dataset", "voc", "--data-root", "/data", "--out", "/pseudo", "--no-label-masking",
            "--dataset-option", "num_val=2", "image_size=32", "--crf-iterations", "3", "--dataset_option", "seed=5",
        ]
    )  # fmt: skip
    assert (args.data_root, args.output_dir, args.use_image_labels, crf.crf_iterations) == (
        "/data",
        "/pseudo",
        False,
        3,
    )
    assert parse_key_values(args.dataset_option) == {"num_val": 2, "image_size": 32, "seed": 5}
    model_args, data_args, training_args = train_command.parse_arguments(
        ["--root", "/voc", "--output-dir", "/out", "--use_cpu", "--model", "runs/x"]
    )
    assert data_args.data_root == "/voc" and training_args.output_dir == "/out"
    assert model_args.model_name_or_path == "runs/x"


def test_packaged_presets_by_name_or_path_and_the_command_line_wins():
    assert {"voc", "coco", "shapes", "demo", "deeplab_voc", "deeplab_coco", "deeplab_shapes"} <= set(
        available_presets()
    )
    by_name = train_command.parse_arguments(["--config", "shapes", "--learning_rate", "0.5"])
    by_path = train_command.parse_arguments(["--config", str(REPO / "cpfcte_hf" / "presets" / "shapes.yaml")])
    assert by_name[1].dataset == by_path[1].dataset == "shapes" and by_name[0].hidden_size == 192
    assert by_name[2].learning_rate == 0.5 and by_path[2].learning_rate == 3e-4
    # --dataset_option adds to the preset's pairs; a key given again wins.
    data_args = train_command.parse_arguments(["--config", "shapes", "--dataset_option", "num_train=16"])[1]
    options = parse_key_values(data_args.dataset_option)
    assert options == {"num_train": 16, "num_val": 200, "image_size": 96}


def test_presets_inherit_and_sections_go_to_their_command(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: demo\nlearning_rate: 0.001\nlabel:\n  size: 64\ntrain_deeplab:\n  max_steps: 9\n")
    values = load_preset(child)
    assert values["learning_rate"] == 0.001 and values["hidden_size"] == 192  # demo <- shapes
    assert values["eval_strategy"] == "no"  # from demo
    assert values["train_deeplab"]["max_steps"] == 9 and values["train_deeplab"]["resnet_layer_type"] == "basic"
    model_args, data_args, training_args = train_command.parse_arguments(["--config", str(child)])
    assert training_args.learning_rate == 0.001 and model_args.context_fusion_residual is True
    args, _ = label_command.parse_arguments(["--config", str(child)])
    assert args.size == 64 and args.dataset == "shapes"  # the section plus the shared data keys
    from cpfcte_hf.stage2.train import parse_arguments as deeplab_arguments

    data, model, _, _, training = deeplab_arguments(["--config", str(child)])
    assert training.max_steps == 9 and model.backbone == "none" and data.dataset == "shapes"


def test_a_cycle_of_bases_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(PresetError, match="cycle"):
        load_preset(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--config", "nope"], "Config preset not found: nope"),
        (["train", "--config", "{preset}"], "Unknown key(s) in {preset}: learning_rat"),
        (["label", "--config", "{preset}"], "Unknown key(s) in {preset} (section label): sise"),
        (["train", "--config", "shapes", "--augmentation_device", "gpu"], "--augmentation_device must be one of"),
        (["run", "--config", "voc", "--no_such_option", "1"], "unrecognised arguments: --no_such_option"),
    ],
)
def test_bad_presets_and_options_are_one_line_without_traceback(tmp_path, argv, message, capsys):
    preset = tmp_path / "bad.yaml"
    preset.write_text("base: shapes\nlearning_rat: 0.1\nlabel:\n  sise: 3\n")
    assert main([arg.replace("{preset}", str(preset)) for arg in argv]) == 2  # no exception escapes
    error = capsys.readouterr().err
    assert message.replace("{preset}", str(preset)) in error and len(error.strip().splitlines()) == 1


def test_plain_argparse_benchmarks_take_both_spellings_and_print_their_config(capsys):
    def parser():  # the benchmarks' argparse parser, which adds every long option under both spellings
        plain = BothSpellingsParser()
        plain.add_argument("--batch-size", type=int)
        return plain

    assert parse_plain_args(parser(), ["--batch_size", "3"]).batch_size == 3
    assert parse_plain_args(parser(), ["--batch-size", "3"]).batch_size == 3
    assert main(["bench", "deeplab", "--batch-size", "3", "--print_config"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_size"] == 3


def test_run_overrides_set_stage_one_keys_and_sections():
    from cpfcte_hf.workflows.run import apply_overrides

    preset = apply_overrides(load_preset("demo"), ["top_k=4", "train_deeplab.max_steps=7", "label.size=64"])
    assert preset["top_k"] == 4 and preset["train_deeplab"]["max_steps"] == 7 and preset["label"]["size"] == 64
    assert preset["train_deeplab"]["resnet_layer_type"] == "basic" and load_preset("demo")["top_k"] == 16
    with pytest.raises(ValueError, match="no command section"):
        apply_overrides(load_preset("demo"), ["stage9.max_steps=7"])


def test_a_plain_preset_given_to_a_command_is_that_commands(tmp_path, capsys):
    # A user's own stage-2 preset without `command:` or sections: its keys must not be dropped as stage 1's.
    preset = tmp_path / "my_deeplab.yaml"
    preset.write_text("backbone: none\nmax_steps: 7\ncrop_size: 33\n")
    assert main(["train-deeplab", "--config", str(preset), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert '"backbone": "none"' in printed and '"max_steps": 7' in printed and '"crop_size": 33' in printed
    # The same keys in a run preset's stage-1 part stay stage 1's: train-deeplab then takes only its section.
    preset.write_text("dataset: shapes\nmax_steps: 7\ntrain_deeplab:\n  crop_size: 41\n")
    assert main(["train-deeplab", "--config", str(preset), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert '"crop_size": 41' in printed and '"max_steps": 7' not in printed
