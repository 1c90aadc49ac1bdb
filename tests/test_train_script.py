"""`cpfcte-hf train` / scripts/train.py end to end: presets, saved checkpoint, `accelerate launch` (script and
`-m cpfcte_hf train`) on 2 processes, SIGKILL + resume."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cpfcte_hf import CPFCTEForWeaklySupervisedSegmentation
from tests.utils import accelerate_launch, subprocess_env


REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "scripts" / "train.py")


SHAPES_OPTIONS = ("--dataset_option", "num_train=16", "num_val=8", "image_size=32")


def tiny_args(tmp_path, output_dir, *extra, dataset_options=SHAPES_OPTIONS):
    """The shapes preset shrunk to seconds: 32-px images, a 2-layer 32-wide ViT, 16 training images."""
    return [
        "--config", "shapes",
        *dataset_options,
        "--cache_dir", str(tmp_path / "cache"),
        "--image_size", "32", "--patch_size", "8", "--hidden_size", "32", "--num_hidden_layers", "2",
        "--num_attention_heads", "2", "--intermediate_size", "64",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--report_to", "none", "--dataloader_num_workers", "0", "--logging_steps", "1",
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def script_env() -> dict:
    """`subprocess_env()` with this checkout first on the path: scripts/*.py import the library they sit next to."""
    return {**subprocess_env(), "PYTHONPATH": str(REPO)}


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, env=script_env(), cwd=REPO, timeout=600, **kwargs)


def test_train_script_saves_a_checkpoint_that_loads_everywhere(tmp_path):
    out = tmp_path / "run"
    result = run(
        [sys.executable, TRAIN, *tiny_args(tmp_path, out, "--num_train_epochs", "2", "--report_to", "tensorboard")]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Outputs: {out}" in result.stdout
    resolved = json.loads((out / "run_config.json").read_text())
    assert resolved["ModelArguments"]["hidden_size"] == 32 and resolved["DataArguments"]["dataset"] == "shapes"
    assert resolved["CPFCTETrainingArguments"]["trainable_encoder_blocks"] == -1  # from the preset
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "eval_results.json"):
        assert (out / name).is_file(), name
    assert "eval_mean_iou" in json.loads((out / "eval_results.json").read_text())
    events = list(out.rglob("events.out.tfevents*"))
    assert events, "TensorBoard logs"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for kind, names in accumulator.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
    assert {"train/loss", "train/learning_rate", "eval/mean_iou"} <= tags["scalars"]
    assert {"eval/per_class_iou", "eval/example_0"} <= tags["images"]

    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(out)
    assert model.config.id2label[1] == "disc" and model.config.num_labels == 6
    from PIL import Image
    from transformers import pipeline

    results = pipeline("image-segmentation", model=str(out))(Image.new("RGB", (40, 30), (90, 40, 200)))
    assert results and all(r["mask"].size == (40, 30) for r in results)


@pytest.mark.parametrize("entry", [[TRAIN], ["-m", "cpfcte_hf", "train"]], ids=["script", "module"])
def test_two_processes_with_accelerate_launch_over_gloo(tmp_path, entry):
    out = tmp_path / "ddp"
    command = [
        *accelerate_launch(2), *entry, *tiny_args(tmp_path, out, "--num_train_epochs", "2", "--use_cpu", "true"),
    ]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/2]" in result.stdout and "[rank 1/2]" in result.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    # 16 images, 4 per process and step, 2 processes: 2 steps per epoch (a single process would take 4).
    assert state["global_step"] == 4
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(out)
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 6, 4, 4)


def test_equivariance_loss_on_two_processes(tmp_path):
    """L_ET under DDP: a no-grad target forward and a mosaic forward per step through the wrapped model, each process
    drawing its own views; the run trains the data-parallel number of steps with a finite loss."""
    out = tmp_path / "ddp_et"
    extra = ("--num_train_epochs", "2", "--use_cpu", "true", "--equivariance_loss_weight", "1.0",
             "--et_crop_size", "8", "--et_scale_size", "16")  # fmt: skip
    command = [
        *accelerate_launch(2), "-m", "cpfcte_hf", "train", *tiny_args(tmp_path, out, *extra),
    ]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert losses and all(np.isfinite(losses))
    config = json.loads((out / "run_config.json").read_text())
    assert config["CPFCTETrainingArguments"]["equivariance_loss_weight"] == 1.0


def _final_weights(directory):
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(directory)
    return model.state_dict()


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    common = ["--max_steps", "24", "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy", "no",
              "--load_best_model_at_end", "false", "--save_total_limit", "100", "--seed", "7"]  # fmt: skip
    reference = tmp_path / "reference"
    result = run([sys.executable, TRAIN, *tiny_args(tmp_path, reference, *common)])
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, TRAIN, *tiny_args(tmp_path, killed, *common)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=script_env(), cwd=REPO,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint-8" / "trainer_state.json").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "checkpoint-24").exists() and not (killed / "model.safetensors").exists()

    result = run([sys.executable, TRAIN, *tiny_args(tmp_path, killed, *common, "--resume_from_checkpoint", "last")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 24
    expected, actual = _final_weights(reference), _final_weights(killed)
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_resume_skips_a_checkpoint_that_was_cut_off(tmp_path):
    from cpfcte_hf.utils.trainer_mixins import last_complete_checkpoint

    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # a kill while writing: no trainer_state.json
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")


@pytest.mark.parametrize(
    "extra, options, message",
    [
        (
            ["--dataset", "voc", "--data_root", "/no/such/VOCdevkit", "--dataset_option", "cls_labels=false"],
            (),
            "/no/such/VOCdevkit",
        ),
        (
            ["--dataset", "voc", "--data_root", "/no/such/VOCdevkit"],
            SHAPES_OPTIONS,
            "not an option of the 'voc' loader",
        ),
        (["--resume_from_checkpoint", "last"], SHAPES_OPTIONS, "no complete checkpoint"),
        (["--pooling", "median"], SHAPES_OPTIONS, "pooling"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(tmp_path, extra, options, message):
    result = run([sys.executable, TRAIN, *tiny_args(tmp_path, tmp_path / "bad", *extra, dataset_options=options)])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_preset_key_is_named(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("dataset: shapes\nlearning_rat: 0.1\n")
    result = run([sys.executable, TRAIN, "--config", str(preset), "--output_dir", str(tmp_path / "x")])
    assert result.returncode != 0 and "learning_rat" in result.stderr
