"""`cpfcte-hf demo` (what `make demo` runs), shrunk to seconds: every step of both stages runs and leaves what the
README promises; a rerun skips what is done and refuses outputs made with other settings."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils import subprocess_env


REPO = Path(__file__).resolve().parents[1]

# The demo preset shrunk: 32-px images, a 2-layer 32-wide ViT, 4 steps; an 8-wide DeepLab-v2, 3 steps.
TINY_PRESET = """\
base: demo
dataset_option: [num_train=24, num_val=6, image_size=32]
image_size: 32
hidden_size: 32
num_hidden_layers: 2
num_attention_heads: 2
intermediate_size: 64
lstm_hidden_size: 8
et_crop_size: 8
et_scale_size: 16
max_steps: 4
warmup_steps: 1
per_device_train_batch_size: 8
logging_steps: 1
report_to: none
label:
  size: 64
train_deeplab:
  resnet_hidden_sizes: [8, 8, 16, 16]
  resnet_embedding_size: 8
  image_size: 33
  crop_size: 33
  max_steps: 3
  per_device_train_batch_size: 4
  test_scales: [1.0, 0.5]
  report_to: none
"""
STEPS = ["data", "stage1", "pseudo_labels", "stage2", "eval_stage1_tagged", "eval_stage1_untagged", "eval_stage2"]


def demo(tmp_path, demo_dir, *extra):
    preset = tmp_path / "tiny_demo.yaml"
    preset.write_text(TINY_PRESET)
    command = [
        sys.executable, "-m", "cpfcte_hf", "demo", "--config", str(preset), "--demo_dir", str(demo_dir),
        "--crf_workers", "0", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    demo_dir = tmp_path / "out"
    result = demo(tmp_path, demo_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, demo_dir, result


def test_demo_prints_the_table_and_writes_results(demo_run):
    _, demo_dir, result = demo_run
    results = json.loads((demo_dir / "demo_results.json").read_text())
    keys = (
        "pseudo_label_miou_bpm",
        "pseudo_label_miou_crf",
        "stage1_untagged_miou",
        "stage2_miou",
        "stage2_miou_ms_crf",
    )
    for key in keys:
        assert 0.0 <= results[key] <= 1.0, key
    names = list(results["per_class_iou"])
    assert names[0] == "background" and len(names) == 6  # 5 procedural classes + background
    assert set(results["per_class_iou"]["disc"]) == {"BPM", "CRF", "S1 untagged", "S2", "S2 MS+CRF"}
    assert list(results["seconds"]) == [*STEPS, "hub"]
    assert all(results["steps"][step] == "ran" and results["seconds"][step] > 0 for step in STEPS)
    assert results["failed_images"] == 0 and results["num_val_images"] == 6
    summary = json.loads((demo_dir / "run_summary.json").read_text())
    assert summary["mean_iou"]["stage2"] == results["stage2_miou"]
    # Every step records its settings and their fingerprint next to its folder; stage 1 got the demo preset's.
    record = json.loads((demo_dir / "stage1.step.json").read_text())
    assert record["status"] == "complete" and len(record["fingerprint"]) == 64
    assert record["settings"]["ModelArguments"]["context_fusion_residual"] is True
    assert record["settings"]["CPFCTETrainingArguments"]["eval_strategy"] == "no"
    stage2 = json.loads((demo_dir / "stage2.step.json").read_text())["settings"]
    assert stage2["DeepLabModelArguments"]["resnet_layer_type"] == "basic"  # from deeplab_shapes, via the section
    assert stage2["DeepLabV2TrainingArguments"]["max_steps"] == 3
    # The console table carries the same numbers.
    assert "CPF-CTE demo" in result.stdout
    for key in keys:
        assert f"{100 * results[key]:.1f}" in result.stdout


def test_demo_leaves_masks_reports_and_pictures(demo_run):
    _, demo_dir, _ = demo_run
    val_ids = (demo_dir / "data" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    train_ids = (demo_dir / "data" / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(val_ids) == 6 and len(train_ids) == 24
    for folder, ids in (("eval/stage1_tagged", val_ids), ("pseudo_labels", train_ids)):
        for kind in ("bpm", "crf"):
            for item in ids:
                mask = Image.open(demo_dir / folder / kind / f"{item}.png")
                assert mask.mode == "P" and mask.size == (32, 32)
                assert np.asarray(mask).max() <= 5
    report = demo_dir / "eval" / "stage1_tagged" / "report"
    assert set(json.loads((report / "metrics.json").read_text())["predictions"]) == {"BPM", "CRF"}
    assert (report / "per_class_iou.png").stat().st_size > 0
    overlays = sorted((report / "overlays").glob("*.png"))
    assert overlays and Image.open(overlays[0]).width > 3 * 32  # image | ground truth | BPM | CRF panels
    stage2 = demo_dir / "stage2" / "predictions" / "val" / "report"
    assert set(json.loads((stage2 / "metrics.json").read_text())["predictions"]) == {"MS", "MS+CRF"}
    single = demo_dir / "eval" / "stage2" / "predictions" / "val" / "report" / "metrics.json"
    assert set(json.loads(single.read_text())["predictions"]) == {"MS"}
    assert (stage2 / "per_class_iou.png").stat().st_size > 0


def test_both_checkpoints_load_in_the_pipeline(demo_run):
    from transformers import pipeline

    import cpfcte_hf  # noqa: F401  (registers the Auto classes)

    _, demo_dir, _ = demo_run
    image = Image.open(next((demo_dir / "data" / "JPEGImages").iterdir())).convert("RGB")
    for model in ("stage1", "stage2"):
        segmenter = pipeline("image-segmentation", model=str(demo_dir / model))
        segments = segmenter(image)
        assert segments and {"score", "label", "mask"} <= set(segments[0])
        assert {segment["label"] for segment in segments} <= set(segmenter.model.config.id2label.values())
        assert segments[0]["mask"].size == image.size


def test_a_rerun_skips_done_steps_and_refuses_other_settings(demo_run):
    tmp_path, demo_dir, _ = demo_run
    before = (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns
    result = demo(tmp_path, demo_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in STEPS:
        assert f"[run] {step}: done before with the same settings, skipped" in result.stdout
    assert (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns == before

    # Another stage-2 learning rate: the steps before it stand, stage 2 is refused with the difference named.
    preset = tmp_path / "other_lr.yaml"
    preset.write_text(f"base: {tmp_path / 'tiny_demo.yaml'}\ntrain_deeplab:\n  learning_rate: 0.5\n")
    command = [sys.executable, "-m", "cpfcte_hf", "run", "--config", str(preset), "--output_dir", str(demo_dir),
               "--crf_workers", "0", "--steps", "data", "stage1", "stage2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "step stage2" in result.stderr and "learning_rate: 0.001 -> 0.5" in result.stderr
    assert "[run] stage1: done before with the same settings, skipped" in result.stdout
    assert (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_run_on_two_processes_splits_every_step_and_ships_one_model(tmp_path):
    """`accelerate launch -m cpfcte_hf run` on 2 CPU processes (gloo) without `use_cpu` in the stage-2 recipe:
    each training is one data-parallel run, every image is labelled once, the data and Hub steps run once, and stage
    2 is scored with the weights it saved (each rank's BatchNorm statistics differ after training)."""
    preset = tmp_path / "tiny_demo.yaml"
    preset.write_text(TINY_PRESET)
    out = tmp_path / "out"
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "cpfcte_hf", "run", "--config", str(preset), "--output_dir", str(out),
        "--crf_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    assert all(entry["status"] == "ran" for entry in summary["steps"].values()), summary["steps"]
    for step in STEPS + ["hub"]:  # one log line per step, not one per process
        assert result.stdout.count(f"=== [run] {step}: ") == 2, step  # its start and its end
    assert result.stdout.count("Dry run: nothing pushed") == 1
    # 24 training images. Stage 1: 4 steps of 8 per process, 2 steps an epoch (one process alone: 3 steps, 1.33
    # epochs). Stage 2: 3 steps of 4 per process, one epoch (one process alone: half an epoch).
    for stage, epochs in (("stage1", 2.0), ("stage2", 1.0)):
        state = json.loads((out / stage / "trainer_state.json").read_text())
        assert state["epoch"] == pytest.approx(epochs), stage
    assert len(list((out / "pseudo_labels" / "crf").glob("*.png"))) == 24
    assert len(list((out / "eval" / "stage2" / "predictions" / "val" / "ms").glob("*.png"))) == 6
    report = json.loads((out / "pseudo_labels" / "summary.json").read_text())
    assert report["written"] == 24 and report["failed"] == 0 and report["written_per_process"] == [12, 12]
    assert "6 image(s) of val: 6 written, 0 already done, 0 failed" in result.stdout  # stage 2, both processes
