"""The global batch is the recipe: per-device batch and accumulation follow the launch (`cpfcte_hf.utils.batching`).

The launches are real (`accelerate launch --num_processes 2`, CPU processes on gloo); `--print_config` resolves the
settings exactly as the commands do, without training.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cpfcte_hf.utils.batching import plan_train_batch

from .utils import accelerate_launch, subprocess_env


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("recipe", "cap", "multiple", "processes", "expected"),
    [
        (16, 8, 1, 1, (8, 2)),  # the paper's 16 on one GPU: 8 at once, twice
        (16, 8, 1, 2, (8, 1)),  # the paper's own split: 8 on each of two GPUs
        (16, 8, 1, 8, (2, 1)),
        (10, 5, 1, 1, (5, 2)),  # kazuto1011: 5 x iter_size 2
        (10, 5, 1, 2, (5, 1)),
        (12, 8, 1, 1, (6, 2)),  # the largest divisor of the share within the cap
        (64, 16, 4, 8, (8, 1)),  # L_ET: a multiple of 4 per device
        (16, 8, 4, 2, (8, 1)),
    ],
)
def test_per_device_times_accumulation_times_processes_is_the_recipe(recipe, cap, multiple, processes, expected):
    plan = plan_train_batch(recipe, processes, max_per_device=cap, multiple=multiple)
    assert (plan.per_device, plan.accumulation) == expected
    assert plan.per_device * plan.accumulation * processes == plan.global_batch == recipe
    assert plan.departure is None


def test_a_launch_that_cannot_realise_the_recipe_is_refused_saying_what_works():
    with pytest.raises(ValueError, match=r"^--global_train_batch_size 10 .* 3 processes: launch 1, 2, 5, 10 process"):
        plan_train_batch(10, 3, max_per_device=5)
    with pytest.raises(ValueError, match=r"multiple of 4 .* launch 1, 2, 4 process"):
        plan_train_batch(16, 8, max_per_device=8, multiple=4)
    with pytest.raises(
        ValueError, match=r"--gradient_accumulation_steps 3 does not divide the 8 images .* 1, 2, 4, 8"
    ):
        plan_train_batch(16, 2, accumulation=3)


def test_an_explicit_per_device_batch_is_kept_and_named_a_departure():
    plan = plan_train_batch(16, 1, max_per_device=8, per_device=4)
    assert (plan.per_device, plan.accumulation, plan.global_batch) == (4, 1, 4)
    assert (
        plan.departure
        == "global batch 4 instead of the recipe's 16 (--per_device_train_batch_size 4 given explicitly)"
    )
    assert "a departure from the recipe" in plan.line()
    # Explicit, but the same global batch: no departure.
    assert plan_train_batch(16, 2, per_device=4, accumulation=2).departure is None


def _print_config(processes: int, *argv: str) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, "-m", "cpfcte_hf", *argv, "--print_config"]
    else:
        command = [*accelerate_launch(processes), "-m", "cpfcte_hf", *argv, "--print_config"]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)


def _batch(section: dict) -> tuple[int, int, int]:
    training = next(value for key, value in section.items() if key.endswith("TrainingArguments"))
    plan = section["train_batch"]
    assert (training["per_device_train_batch_size"], training["gradient_accumulation_steps"]) == (
        plan["per_device_train_batch_size"],
        plan["gradient_accumulation_steps"],
    )
    return plan["per_device_train_batch_size"], plan["gradient_accumulation_steps"], plan["num_processes"]


@pytest.mark.parametrize(("processes", "stage1", "stage2"), [(1, (8, 2, 1), (5, 2, 1)), (2, (8, 1, 2), (5, 1, 2))])
def test_print_config_under_the_launch_shows_the_derived_batches(processes, stage1, stage2):
    """`train --config voc`, `train-deeplab --config deeplab_voc` and `run --config voc` on 1 and 2 processes: the
    paper's 16 and kazuto1011's 10 whatever the launch (printed once, by the main process)."""
    result = _print_config(processes, "train", "--config", "voc")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _batch(json.loads(result.stdout)) == stage1
    result = _print_config(processes, "train-deeplab", "--config", "deeplab_voc")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _batch(json.loads(result.stdout)) == stage2
    result = _print_config(processes, "run", "--config", "voc", "--data_root", "data/VOCdevkit/VOC2012")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout)
    assert (_batch(config["stage1"]), _batch(config["stage2"])) == (stage1, stage2)
    for section in (config["stage1"], config["stage2"]):
        plan = section["train_batch"]
        assert plan["global_train_batch_size"] == plan["recipe_global_train_batch_size"] and plan["departure"] is None


def test_an_explicit_per_device_batch_is_printed_as_a_departure():
    result = _print_config(1, "train", "--config", "voc", "--per_device_train_batch_size", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)["train_batch"]
    assert (
        plan["per_device_train_batch_size"],
        plan["gradient_accumulation_steps"],
        plan["global_train_batch_size"],
    ) == (
        4,
        1,
        4,
    )
    assert plan["departure"].startswith("global batch 4 instead of the recipe's 16")


def test_a_run_whose_launch_cannot_realise_stage_2s_batch_is_refused_in_one_line():
    """DeepLab's 10 over 3 processes: refused before anything is written, naming the process counts that work."""
    result = _print_config(3, "train-deeplab", "--config", "deeplab_voc")
    assert result.returncode != 0 and not result.stdout.strip()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "cannot be split evenly over 3 processes: launch 1, 2, 5, 10 process(es)" in errors[0]


def test_a_training_on_one_process_accumulates_to_the_global_batch(tmp_path):
    """`train` with a global batch of 8, at most 4 per device, on one process: 4 x 2, and each optimiser step takes 8
    of the 24 training images (2 steps = 2/3 of an epoch)."""
    out = tmp_path / "run"
    argv = [
        "train", "--config", "shapes", "--dataset_option", "num_train=24", "num_val=4", "image_size=32",
        "--cache_dir", str(tmp_path / "cache"), "--image_size", "32", "--patch_size", "8", "--hidden_size", "32",
        "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "32",
        "--global_train_batch_size", "8", "--max_per_device_train_batch_size", "4", "--max_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--report_to", "none", "--dataloader_num_workers", "0", "--output_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "cpfcte_hf", *argv], capture_output=True, text=True, env=subprocess_env(), cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Batch: 8 images per optimiser step = 4 per device x 2 accumulation x 1 process(es)" in result.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(2 / 3)
    recorded = json.loads((out / "run_config.json").read_text())["train_batch"]
    assert (recorded["per_device_train_batch_size"], recorded["gradient_accumulation_steps"]) == (4, 2)
