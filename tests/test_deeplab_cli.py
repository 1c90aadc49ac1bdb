"""scripts/train_deeplab.py end to end: stage 1's pseudo-label directory in, a trained and evaluated DeepLab out."""

import json
import os
import runpy
import subprocess

import numpy as np
import pytest
from transformers import ResNetForImageClassification

from cpfcte_hf.data import build_dataset
from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
from cpfcte_hf.models.cpfcte.visualization import save_mask
from cpfcte_hf.stage2.train import parse_arguments
from tests.data_trees import write_voc_tree
from tests.deeplab_helpers import tiny_resnet_config
from tests.utils import PYTHON, save_tiny_checkpoint, subprocess_env


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]


def script_main(name):
    return runpy.run_path(os.path.join(REPO, "scripts", name), run_name="not_main")["main"]


@pytest.fixture(scope="module")
def stage1_output(tmp_path_factory):
    """A tiny VOC tree, pseudo-labels for its train_aug split from a tiny CPF-CTE, and a tiny ImageNet-style ResNet."""
    root = tmp_path_factory.mktemp("deeplab_cli")
    tree = write_voc_tree(root / "voc", splits={"train_aug": 4, "val": 2}, class_names=CLASS_NAMES)
    save_tiny_checkpoint(root / "cpfcte", num_labels=4, classifier_init_std=50.0)
    pseudo = root / "pseudo"
    code = script_main("pseudo_label.py")(
        [
            "--model",
            str(root / "cpfcte"),
            "--dataset",
            "voc",
            "--data_root",
            tree["root"],
            "--split",
            "train_aug",
            "--out",
            str(pseudo),
            "--size",
            "32",
            "--crf_workers",
            "0",
            "--no_progress",
        ]
    )
    assert code == 0 and len(list((pseudo / "crf").glob("*.png"))) == 4
    ResNetForImageClassification(tiny_resnet_config(num_labels=5)).save_pretrained(root / "resnet")
    return {"root": root, "tree": tree, "pseudo": pseudo, "resnet": root / "resnet"}


def _argv(stage1, output_dir, *extra):
    return [
        "--dataset",
        "voc",
        "--data_root",
        stage1["tree"]["root"],
        "--pseudo_labels",
        str(stage1["pseudo"]),
        "--backbone",
        str(stage1["resnet"]),
        "--atrous_rates",
        "1",
        "2",
        "--image_size",
        "33",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
        "--crop_size",
        "33",
        "--save_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--crf_workers",
        "0",
        "--num_overlays",
        "1",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def test_train_deeplab_script_trains_on_pseudo_label_output_and_evaluates(stage1_output, tmp_path):
    output = tmp_path / "deeplab"
    assert script_main("train_deeplab.py")(_argv(stage1_output, output)) == 0

    model = DeepLabV2ForSemanticSegmentation.from_pretrained(output)
    assert [model.config.id2label[i] for i in range(4)] == CLASS_NAMES
    assert model.config.atrous_rates == [1, 2] and model.config.backbone_config.hidden_sizes == [8, 16, 16, 32]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    run_args = json.loads((output / "run_args.json").read_text())
    assert run_args["DeepLabDataArguments"]["pseudo_labels"] == str(stage1_output["pseudo"])

    report = json.loads((output / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert report["split"] == "val" and report["class_names"] == CLASS_NAMES
    for name in ("MS", "MS+CRF"):
        assert report["predictions"][name]["num_scored"] == 2 and report["predictions"][name]["num_missing"] == 0

    # Evaluation only, from the saved model, single scale without CRF, into the same layout.
    evaluation = tmp_path / "eval_only"
    code = script_main("train_deeplab.py")(
        _argv(
            stage1_output,
            evaluation,
            "--do_train",
            "false",
            "--model_name_or_path",
            str(output),
            "--test_scales",
            "1.0",
            "--test_crf",
            "false",
        )
    )
    assert code == 0
    report = json.loads((evaluation / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert set(report["predictions"]) == {"MS"} and report["predictions"]["MS"]["num_scored"] == 2


def test_bad_pseudo_label_directory_is_a_clear_error(stage1_output, tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    argv = _argv(stage1_output, tmp_path / "out")
    argv[argv.index("--pseudo_labels") + 1] = str(missing)
    assert script_main("train_deeplab.py")(argv) == 2
    assert f"Pseudo-label directory {str(missing)!r} does not exist" in capsys.readouterr().err


def test_shapes_generated_with_dataset_options_and_a_sample_limit(tmp_path):
    """`--dataset shapes` built in memory with loader options, pseudo-labels for part of it, eval-sample limit."""
    options = ["num_train=6", "num_val=4", "image_size=48", "num_classes=2"]
    train = build_dataset("shapes", split="train", num_train=6, image_size=48, num_classes=2, cache_dir=str(tmp_path))
    for row in train:
        save_mask(np.asarray(row["mask"]), tmp_path / "pseudo" / f"{row['id']}.png")
    argv = [
        "--dataset",
        "shapes",
        "--train_split",
        "train",
        "--dataset_option",
        *options,
        "--cache_dir",
        str(tmp_path),
        "--max_train_samples",
        "5",
        "--max_eval_samples",
        "3",
        "--pseudo_labels",
        str(tmp_path / "pseudo"),
        "--backbone",
        "none",
        "--resnet_layer_type",
        "basic",
        "--resnet_depths",
        "1",
        "1",
        "1",
        "1",
        "--resnet_hidden_sizes",
        "8",
        "8",
        "16",
        "16",
        "--resnet_embedding_size",
        "8",
        "--atrous_rates",
        "1",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--crop_size",
        "33",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--test_crf",
        "false",
        "--num_overlays",
        "0",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert script_main("train_deeplab.py")(argv) == 0
    report = json.loads((tmp_path / "out" / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert report["num_images"] == 3 and report["class_names"] == ["background", "disc", "square"]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2 / 5)  # 2 steps of 1 image; 5 training images kept of 6


@pytest.mark.parametrize("preset", ["deeplab_voc", "deeplab_coco", "deeplab_shapes"])
def test_presets_parse_and_carry_the_recipe(preset):
    data, model, test, crf, training = parse_arguments(["--config", preset])
    assert training.min_scale <= 1.0 <= training.max_scale and training.flip_prob == 0.5
    assert training.momentum == 0.9 and training.weight_decay == 5e-4 and training.poly_power == 0.9
    assert training.classifier_lr_multiplier == 10.0 and training.global_train_batch_size == 10
    # One process: kazuto1011's 5 x iter_size 2 (a toy model on shapes takes the 10 at once).
    per_device = 10 if preset == "deeplab_shapes" else 5
    assert (training.per_device_train_batch_size, training.gradient_accumulation_steps) == (
        per_device,
        10 // per_device,
    )
    assert test.test_scales == [1.0, 0.75, 0.5] and test.test_crf and crf.crf_iterations == 10
    assert model.output_stride == 8 and data.pseudo_label_set == "crf"
    if preset != "deeplab_shapes":  # the recipe of docs/method.md section 4 exactly
        assert model.backbone == "microsoft/resnet-101" and model.atrous_rates == [6, 12, 18, 24]
        assert training.crop_size == 321 and (training.min_scale, training.max_scale) == (0.5, 1.5)
        assert training.max_steps == 20000 and training.learning_rate == 2.5e-4 and model.freeze_batch_norm
    # The command line wins over the preset.
    *_, training = parse_arguments(["--config", preset, "--max_steps", "7"])
    assert training.max_steps == 7


DISTRIBUTED_ARGS = ["--ddp_backend", "gloo"]


@pytest.mark.slow
def test_two_processes_train_with_ddp_and_share_the_evaluation(stage1_output, tmp_path):
    output = tmp_path / "ddp"
    command = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        os.path.join(REPO, "scripts", "train_deeplab.py"),
        *_argv(stage1_output, output),
        *DISTRIBUTED_ARGS,
        "--per_device_train_batch_size",
        "1",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "3",
    ]
    env = {**subprocess_env(), "PYTHONPATH": REPO}  # the script imports the library it sits next to
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    # 3 steps of 1 image on each of 2 processes = 6 of the 4 training images: 1.5 epochs (0.75 with one process).
    assert state["global_step"] == 3 and state["epoch"] == pytest.approx(1.5)
    # The evaluation during training scores each process's share and sums the confusion matrices.
    evaluations = [entry for entry in state["log_history"] if "eval_mean_iou" in entry]
    assert len(evaluations) == 1 and evaluations[0]["eval_num_images"] == 2
    report = json.loads((output / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert report["predictions"]["MS+CRF"]["num_scored"] == 2  # one image per process, metrics summed
    assert len(list((output / "predictions" / "val" / "ms_crf").glob("*.png"))) == 2


def test_multi_scale_views_are_8k_plus_1_so_corner_aligned_logits_fall_on_the_image():
    """At 96 px a stride-8 model's 12x12 logits, upsampled with align_corners, drift by up to 7 px towards the
    bottom right (the demo's stage 2 lost 4.5 mIoU points to it); at 97 px they sit exactly on every 8th pixel."""
    import torch

    from cpfcte_hf.prediction.segment import multi_scale_probabilities
    from tests.deeplab_helpers import tiny_deeplab_config

    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape[-2:]), with_kwargs=True
    )
    with torch.no_grad():
        probabilities = multi_scale_probabilities(model, np.zeros((96, 90, 3), np.uint8), scales=(1.0, 0.5))
    assert [tuple(shape) for shape in seen] == [(97, 89), (49, 49)]
    assert probabilities.shape == (3, 96, 90)
