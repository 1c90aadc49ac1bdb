"""`cpfcte-hf train-segmenter`: stage 2 with transformers' SegFormer and UperNet (tiny configs, random init, and an
encoder checkpoint) on a tiny pseudo-label folder, through the shared prediction job (multi-scale + CRF) and into
`pipeline("image-segmentation")`."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForSemanticSegmentation,
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    UperNetForSemanticSegmentation,
    pipeline,
)

from cpfcte_hf.cli.main import run_command
from cpfcte_hf.data import build_dataset
from cpfcte_hf.models.cpfcte.visualization import save_mask
from cpfcte_hf.models.segmenters import parse_config_overrides, segmentation_loss, segmenter_config
from cpfcte_hf.stage2.dataset import random_scale_crop_flip
from tests.utils import accelerate_launch, subprocess_env


REPO = Path(__file__).resolve().parents[1]
CLASSES = ["background", "disc", "square"]
OPTIONS = ["num_train=6", "num_val=3", "image_size=48", "num_classes=2"]
TINY_SEGFORMER = (
    "num_encoder_blocks=2,depths=[1,1],sr_ratios=[2,1],hidden_sizes=[8,16],patch_sizes=[7,3],strides=[4,2],"
    "num_attention_heads=[1,1],mlp_ratios=[2,2],decoder_hidden_size=16"
)
TINY_UPERNET = (
    "backbone_config={model_type: convnext, depths: [1,1], hidden_sizes: [8,16], num_stages: 2},hidden_size=16,"
    "pool_scales=[1,2]"
)


@pytest.fixture(scope="module")
def pseudo_labels(tmp_path_factory):
    """A shapes training split (6 images) with its ground truth written as the pseudo-label folder."""
    root = tmp_path_factory.mktemp("segmenter")
    train = build_dataset("shapes", split="train", num_train=6, image_size=48, num_classes=2, cache_dir=str(root))
    for row in train:
        save_mask(np.asarray(row["mask"]), root / "pseudo" / f"{row['id']}.png")
    return root


def _argv(root: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset", "shapes", "--train_split", "train", "--dataset_option", *OPTIONS, "--cache_dir", str(root),
        "--pseudo_labels", str(root / "pseudo"), "--image_size", "48", "--crop_size", "40", "--max_steps", "3",
        "--per_device_train_batch_size", "2", "--save_steps", "3", "--learning_rate", "1e-3", "--optim",
        "adamw_torch", "--use_cpu", "true", "--report_to", "none", "--dataloader_num_workers", "0",
        "--crf_workers", "0", "--num_overlays", "1", "--test_scales", "1.0", "0.75", "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def _check_trained_and_evaluated(output: Path, model_class) -> None:
    model = AutoModelForSemanticSegmentation.from_pretrained(output)
    assert type(model) is model_class and [model.config.id2label[i] for i in range(3)] == CLASSES
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 3
    # The shared prediction job: multi-scale masks and their CRF refinement, scored against the ground truth.
    report = json.loads((output / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert report["stage"] == "stage2" and report["class_names"] == CLASSES
    for name in ("MS", "MS+CRF"):
        assert report["predictions"][name]["num_scored"] == 3 and report["predictions"][name]["num_missing"] == 0
    assert report["model_info"]["architecture"]["model_type"] == model.config.model_type
    # The checkpoint serves transformers' pipeline with transformers' own classes (no remote code).
    config = json.loads((output / "config.json").read_text())
    assert "auto_map" not in config
    segmenter = pipeline("image-segmentation", model=str(output))
    assert type(segmenter.model) is model_class
    preprocessor = json.loads((output / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"height": 48, "width": 48} and preprocessor["image_mean"] == [0.485, 0.456, 0.406]
    image = Image.fromarray(np.full((30, 50, 3), 128, np.uint8))
    segments = segmenter(image, subtask="semantic")
    assert segments and {segment["label"] for segment in segments} <= set(CLASSES)
    assert all(segment["mask"].size == (50, 30) for segment in segments)


def test_segformer_from_a_config_trains_saves_predicts_and_serves_the_pipeline(pseudo_labels, tmp_path):
    output = tmp_path / "segformer"
    argv = _argv(pseudo_labels, output, "--model_type", "segformer", "--config_overrides", TINY_SEGFORMER)
    assert run_command("train-segmenter", argv) == 0
    _check_trained_and_evaluated(output, SegformerForSemanticSegmentation)
    model = SegformerForSemanticSegmentation.from_pretrained(output)
    assert model.config.depths == [1, 1] and model.config.decoder_hidden_size == 16
    # `train-deeplab` is the same command: it reads the same options and trains the same architecture.
    output = tmp_path / "same_command"
    argv = _argv(pseudo_labels, output, "--model_type", "segformer", "--config_overrides", TINY_SEGFORMER)
    assert run_command("train-deeplab", [*argv, "--test_crf", "false"]) == 0
    assert type(AutoModelForSemanticSegmentation.from_pretrained(output)) is SegformerForSemanticSegmentation


def test_upernet_with_a_tiny_convnext_backbone_trains_and_serves_the_pipeline(pseudo_labels, tmp_path):
    output = tmp_path / "upernet"
    argv = _argv(pseudo_labels, output, "--model_type", "upernet", "--config_overrides", TINY_UPERNET)
    assert run_command("train-segmenter", argv) == 0
    _check_trained_and_evaluated(output, UperNetForSemanticSegmentation)
    config = json.loads((output / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "convnext" and config["use_auxiliary_head"] is False
    # The decoder reads every stage of the backbone given as a mapping (a ConvNeXt alone would give its last only).
    assert config["backbone_config"]["out_features"] == ["stage1", "stage2"]


def test_an_encoder_checkpoint_gets_a_decode_head_for_the_dataset_classes(pseudo_labels, tmp_path):
    """`--model_name_or_path` an encoder-only checkpoint (as `nvidia/mit-b1`): its weights are the start, the decode
    head is new and made for the dataset's classes; the first step trains from the checkpoint's encoder."""
    encoder_dir = tmp_path / "mit-tiny"
    overrides = parse_config_overrides(TINY_SEGFORMER)
    encoder = SegformerForImageClassification(SegformerConfig(**overrides, num_labels=10))
    encoder.save_pretrained(encoder_dir)
    output = tmp_path / "from_encoder"
    argv = _argv(pseudo_labels, output, "--model_name_or_path", str(encoder_dir), "--max_steps", "1")
    argv[argv.index("--save_steps") + 1] = "1"
    extra = ["--learning_rate", "0", "--lr_scheduler_type", "constant", "--test_crf", "false"]
    assert run_command("train-segmenter", [*argv, *extra]) == 0
    trained = SegformerForSemanticSegmentation.from_pretrained(output)
    assert trained.config.num_labels == 3 and trained.config.id2label[1] == "disc"
    # Learning rate 0: the encoder is the checkpoint's, unchanged.
    for name, value in encoder.segformer.state_dict().items():
        torch.testing.assert_close(trained.segformer.state_dict()[name], value)


def test_bad_model_options_are_one_line_errors(pseudo_labels, tmp_path, capsys):
    argv = _argv(pseudo_labels, tmp_path / "out", "--model_type", "segformerr")
    assert run_command("train-segmenter", argv) == 2
    assert "--model_type 'segformerr' is not a semantic-segmentation architecture" in capsys.readouterr().err
    argv = _argv(pseudo_labels, tmp_path / "out", "--model_type", "segformer", "--config_overrides", "depthz=[1]")
    assert run_command("train-segmenter", argv) == 2
    assert "'depthz' is not a field of the segformer config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_loss_upsamples_low_resolution_logits_and_ignores_255():
    config = segmenter_config("segformer", CLASSES, TINY_SEGFORMER)
    model = SegformerForSemanticSegmentation(config)
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    labels[0, :10] = 255
    loss, outputs = segmentation_loss(model, pixel_values, labels)
    assert outputs.logits.shape[-2:] == (8, 8)  # SegFormer: 1/4 of the input
    upsampled = torch.nn.functional.interpolate(outputs.logits, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(upsampled, labels, ignore_index=255))
    loss, _ = segmentation_loss(model, pixel_values, torch.full((2, 32, 32), 255))
    assert loss.item() == 0.0 and loss.requires_grad  # nothing labelled: a zero that keeps the graph


def test_vertical_flip_and_transpose_options_turn_the_square_crop():
    image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    mask = np.arange(400, dtype=np.uint8).reshape(20, 20) % 3
    kwargs = dict(crop_size=20, scale_range=(1.0, 1.0), flip_prob=0.0)
    _, plain = random_scale_crop_flip(image, mask, **kwargs, generator=torch.Generator().manual_seed(0))
    _, turned = random_scale_crop_flip(
        image, mask, **kwargs, vflip_prob=1.0, transpose_prob=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(turned, plain.flip(0).T)


@pytest.mark.slow
def test_two_processes_train_a_segformer_with_accelerate_launch(pseudo_labels, tmp_path):
    output = tmp_path / "ddp"
    command = [
        *accelerate_launch(2), "-m", "cpfcte_hf", "train-segmenter",
        *_argv(pseudo_labels, output, "--model_type", "segformer", "--config_overrides", TINY_SEGFORMER),
        "--per_device_train_batch_size", "1", "--ddp_backend", "gloo",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    # 3 steps of 1 image on each of 2 processes = 6 images: one epoch of the 6 (half an epoch with one process).
    assert state["global_step"] == 3 and state["epoch"] == pytest.approx(1.0)
    report = json.loads((output / "predictions" / "val" / "report" / "metrics.json").read_text())
    assert report["predictions"]["MS+CRF"]["num_scored"] == 3  # the split shared by the processes, scored once
    assert len(list((output / "predictions" / "val" / "ms_crf").glob("*.png"))) == 3
    assert type(AutoModelForSemanticSegmentation.from_pretrained(output)) is SegformerForSemanticSegmentation


@pytest.mark.parametrize("preset", ["segformer_voc", "segformer_coco", "segformer_shapes", "deeplab_shapes"])
def test_presets_are_read_by_train_segmenter_and_build_their_model(preset):
    from cpfcte_hf.cli.commands.train_segmenter import parse_arguments
    from cpfcte_hf.stage2.train import build_model

    data, model_args, test, crf, training = parse_arguments(["--config", preset])
    assert test.test_scales == [1.0, 0.75, 0.5] and test.test_crf and data.pseudo_label_set == "crf"
    if preset in ("segformer_voc", "segformer_coco"):  # SegFormer's recipe on a MiT encoder from the Hub
        assert model_args.model_name_or_path.startswith("nvidia/mit-b") and training.optim == "adamw_torch"
        assert training.learning_rate == 6e-5 and training.classifier_lr_multiplier == 10.0
        assert training.warmup_steps == 1500 and training.poly_power == 1.0 and training.vflip_prob == 0.0
        return
    model = build_model(model_args, ["background", "disc", "square", "triangle", "ring", "cross"])
    if preset == "segformer_shapes":  # random init from the preset's config overrides (a YAML mapping)
        assert type(model) is SegformerForSemanticSegmentation and list(model.config.depths) == [2, 2, 2, 2]
        assert training.vflip_prob == training.transpose_prob == 0.5
    else:  # the same command reads the DeepLab-v2 presets: the default architecture
        assert model.config.model_type == "deeplab_v2" and training.vflip_prob == training.transpose_prob == 0.0
