"""scripts/reproduce.py on a tiny shapes recipe: the tables it writes, the commands it lists, and reuse on a rerun."""

import json
import os

import pytest

from cpfcte_hf.workflows.reproduce import PAPER_TABLES, Reproduction, main, preset_path


TINY_STAGE1 = """
dataset: shapes
dataset_option: [num_train=8, num_val=4, image_size=32, num_classes=2]
train_split: train
eval_split: ""
image_size: 32
patch_size: 8
hidden_size: 32
num_hidden_layers: 1
num_attention_heads: 2
intermediate_size: 64
context_fusion_residual: true
top_k: 2
num_train_epochs: 1
per_device_train_batch_size: 4
stage1_epochs: 0
stage1_freeze_encoder: false
trainable_encoder_blocks: -1
learning_rate: 1.0e-3
max_grad_norm: 1.0
adam_epsilon: 1.0e-8
et_crop_size: 8
et_scale_size: 16
save_strategy: epoch
load_best_model_at_end: false
eval_pictures: 0
use_cpu: true
dataloader_num_workers: 0
report_to: none
"""

TINY_DEEPLAB = """
pseudo_label_set: crf
backbone: none
resnet_layer_type: basic
resnet_depths: [1, 1, 1, 1]
resnet_hidden_sizes: [8, 8, 16, 16]
resnet_embedding_size: 8
atrous_rates: [1]
freeze_batch_norm: false
max_steps: 2
per_device_train_batch_size: 2
crop_size: 33
use_cpu: true
report_to: none
dataloader_num_workers: 0
test_crf: false
num_overlays: 0
save_strategy: "no"
"""


@pytest.fixture
def presets(tmp_path):
    stage1, deeplab = tmp_path / "tiny.yaml", tmp_path / "tiny_deeplab.yaml"
    stage1.write_text(TINY_STAGE1)
    deeplab.write_text(TINY_DEEPLAB)
    return str(stage1), str(deeplab)


def _argv(tmp_path, presets, *extra):
    stage1, deeplab = presets
    return [
        "--dataset",
        "shapes",
        "--output_dir",
        str(tmp_path / "out"),
        "--preset",
        stage1,
        "--deeplab_preset",
        deeplab,
        "--inference_size",
        "32",
        "--override",
        f"cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def test_tables_are_written_beside_the_paper_and_a_rerun_reuses_everything(tmp_path, presets):
    argv = _argv(tmp_path, presets, "--tables", "2", "5")
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "tables.json").read_text())
    assert set(report["tables"]) == {"2", "5"}
    table5 = {row["row"]: row for row in report["tables"]["5"]["rows"]}
    assert [table5[name]["paper"] for name in ("avg", "max", "Top-K")] == [67.7, 68.1, 69.5]
    for row in table5.values():
        assert 0.0 <= row["ours_mean"] <= 100.0 and row["ours_std"] is None and len(row["ours_per_seed"]) == 1
    table2 = report["tables"]["2"]["rows"][0]
    assert table2["paper"] == 69.5 and 0.0 <= table2["ours_mean"] <= 100.0
    # Each table lists the commands it ran: training, pseudo-labels and, for table 2, stage 2.
    commands = report["tables"]["2"]["commands"]
    assert any(c.startswith("cpfcte-hf train --config") and "--seed 1234" in c for c in commands)
    assert any(c.startswith("cpfcte-hf label") and "--split train" in c for c in commands)
    assert any(c.startswith("cpfcte-hf train-deeplab") and "--pseudo_labels" in c for c in commands)
    assert any("--pooling avg" in c for c in report["tables"]["5"]["commands"])
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "| avg | 67.7 |" in markdown and "cpfcte-hf train-deeplab" in markdown
    # 3 trainings (avg, max, CPF-CTE), their val pseudo-labels, CPF-CTE's train pseudo-labels and its DeepLab.
    assert len(report["steps_run"]) == 3 + 3 + 1 + 1 and not report["steps_reused"]

    # A rerun with the same settings trains nothing and writes the same numbers.
    assert main(argv) == 0
    again = json.loads((tmp_path / "out" / "tables.json").read_text())
    assert not again["steps_run"] and len(again["steps_reused"]) == 8
    assert again["tables"] == report["tables"]

    # Changed settings make new cells instead of reusing results made otherwise.
    assert main(_argv(tmp_path, presets, "--tables", "5", "--override", "learning_rate=2e-3")) == 0
    changed = json.loads((tmp_path / "out" / "tables.json").read_text())
    assert len(changed["steps_run"]) == 6 and not changed["steps_reused"]


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, presets):
    """A cell whose training was cut after its checkpoint (no done marker) continues it instead of starting over."""
    stage1, _ = presets
    reproduction = Reproduction(
        "shapes",
        tmp_path / "out",
        tables=["5"],
        preset=stage1,
        inference_size=32,
        overrides={"cache_dir": str(tmp_path / "cache"), "num_train_epochs": 2},
    )
    reproduction.run()
    cell = next((tmp_path / "out" / "cells").glob("cpf-cte-*"))
    (cell / "train.done.json").unlink()  # as if killed after the last checkpoint, before the marker
    (cell / "pseudo-val.done.json").unlink()
    rerun = Reproduction(
        "shapes",
        tmp_path / "out",
        tables=["5"],
        preset=stage1,
        inference_size=32,
        overrides={"cache_dir": str(tmp_path / "cache"), "num_train_epochs": 2},
    )
    report = rerun.run()
    assert sorted(step.split("/")[1] for step in report["steps_run"]) == ["pseudo-val", "train"]
    state = json.loads((cell / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 2 epochs of 2 steps: the resumed run did not start again from 0


def test_bad_requests_are_refused_clearly(tmp_path, presets, capsys):
    assert main(["--dataset", "shapes", "--tables", "3", "--output_dir", str(tmp_path)]) == 2
    assert "not on shapes" in capsys.readouterr().err
    assert main(["--dataset", "shapes", "--tables", "9", "--output_dir", str(tmp_path)]) == 2
    assert main(["--dataset", "shapes", "--seeds", "0", "--output_dir", str(tmp_path)]) == 2
    with pytest.raises(FileNotFoundError, match="no-such"):
        preset_path("no-such")


def test_every_paper_number_is_the_papers():
    numbers = {key: [row[3] for row in table["rows"]] for key, table in PAPER_TABLES.items()}
    assert numbers == {
        "1": [67.1, 70.8],
        "2": [69.5],
        "3": [45.4, 41.3],
        "4": [65.2, 67.1, 67.8, 69.5],
        "5": [67.7, 68.1, 69.5],
    }
    for name in ("voc", "voc-vitpcm", "voc-plus", "coco", "shapes-reproduce", "deeplab_voc"):
        assert os.path.isfile(preset_path(name))


def test_time_cells_reports_wall_and_cpu_seconds(tmp_path, presets, capsys):
    stage1, _ = presets
    argv = ["--dataset", "shapes", "--output_dir", str(tmp_path / "out"), "--preset", stage1]
    argv += ["--inference_size", "32", "--override", f"cache_dir={tmp_path / 'cache'}", "--time_cells", "plus"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    timings = json.loads(out[out.rindex('{\n  "plus"') :])
    assert set(timings["plus"]) == {
        "epochs",
        "train_wall_s",
        "train_cpu_s",
        "pseudo_labels_wall_s",
        "pseudo_labels_cpu_s",
    }
    assert timings["plus"]["epochs"] == 1 and timings["plus"]["train_cpu_s"] > 0
    cell = next((tmp_path / "out" / "cells").glob("plus-seed1234-*"))
    assert (cell / "train.done.json").is_file() and (cell / "pseudo-val.done.json").is_file()


def test_top_k_sweep_table(tmp_path, presets):
    stage1, _ = presets
    argv = ["--dataset", "shapes", "--output_dir", str(tmp_path / "out"), "--preset", stage1, "--tables", "K"]
    argv += ["--inference_size", "32", "--override", f"cache_dir={tmp_path / 'cache'}", "--top_k_sweep", "1", "0.5"]
    assert main(argv) == 0
    table = json.loads((tmp_path / "out" / "tables.json").read_text())["tables"]["K"]
    assert [row["row"] for row in table["rows"]] == ["K = 1", "K = 0.5"]
    assert all(row["paper"] is None and row["ours_mean"] is not None for row in table["rows"])
    assert any("--top_k 0.5" in command for command in table["commands"])
    assert any("--top_k 1 " in command for command in table["commands"])


def test_a_cell_step_made_with_other_settings_is_refused_unless_overwrite(tmp_path, presets, capsys):
    """The cells run on the step engine of `cpfcte-hf run`: a stage 2 whose settings changed (the cell's folder is
    named by the stage-1 settings only) is refused with the difference named, `--overwrite` redoes it alone, and a
    marker written without settings (an older cpfcte-hf) is refused the same way, never reused unchecked."""
    argv = _argv(tmp_path, presets, "--tables", "2")
    assert main(argv) == 0
    cell = next((tmp_path / "out" / "cells").glob("cpf-cte-*"))
    record = json.loads((cell / "deeplab.done.json").read_text())
    assert record["status"] == "complete" and len(record["fingerprint"]) == 64
    assert record["settings"]["DeepLabV2TrainingArguments"]["max_steps"] == 2
    before = (cell / "deeplab" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()

    changed = [*argv, "--deeplab_override", "max_steps=3"]
    assert main(changed) == 2
    error = capsys.readouterr().err
    assert "step " + cell.name + "/deeplab" in error and "max_steps: 2 -> 3" in error and "--overwrite" in error
    assert (cell / "deeplab" / "model.safetensors").stat().st_mtime_ns == before

    assert main([*changed, "--overwrite"]) == 0
    report = json.loads((tmp_path / "out" / "tables.json").read_text())
    assert report["steps_run"] == [f"{cell.name}/deeplab"] and len(report["steps_reused"]) == 3
    assert json.loads((cell / "deeplab" / "trainer_state.json").read_text())["global_step"] == 3

    (cell / "train.done.json").write_text(json.dumps({"seconds": 1.0}))  # a marker of the engine-less reproduce
    assert main(changed) == 2
    assert "older cpfcte-hf" in capsys.readouterr().err
