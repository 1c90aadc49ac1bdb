"""`cpfcte-hf run --config voc` / `--config coco` end to end on tiny VOC and COCO trees: the researcher's one command,
with the packaged recipe (stage 1 from a ViT checkpoint, label at the preset's settings, kazuto1011's stage 2 from a ResNet checkpoint),
shrunk only in size. The reference-code choices of the presets must reach the commands that run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import ResNetForImageClassification, ViTModel

from tests.data_trees import write_coco_toco_tree, write_voc_tree
from tests.deeplab_helpers import tiny_resnet_config
from tests.utils import subprocess_env, tiny_vit_config


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["voc", "coco"])
def test_run_with_the_dataset_preset_on_a_tiny_tree(tmp_path, preset):
    if preset == "voc":
        root, train_split, dataset_name = write_voc_tree(tmp_path / "data")["voc_dir"], "train_aug", "PASCAL VOC"
    else:
        root, train_split, dataset_name = write_coco_toco_tree(tmp_path / "data", num_train=4)["root"], "train", "COCO"
    vit, resnet = tmp_path / "vit", tmp_path / "resnet"
    ViTModel(tiny_vit_config(), add_pooling_layer=False).save_pretrained(vit)
    ResNetForImageClassification(tiny_resnet_config()).save_pretrained(resnet)
    out = tmp_path / "run"
    sizes = [  # only sizes and lengths change: every recipe value of voc.yaml / deeplab_voc.yaml stays
        f"backbone={vit}", "image_size=32", "inference_size=64", "lstm_hidden_size=8", "trainable_encoder_blocks=1",
        "num_train_epochs=2", "stage1_epochs=1", "per_device_train_batch_size=2", "dataloader_num_workers=0",
        "bf16=false", "use_cpu=true", "logging_steps=1", "report_to=none", "label.size=64",
        f"train_deeplab.backbone={resnet}", "train_deeplab.image_size=33", "train_deeplab.crop_size=33",
        "train_deeplab.atrous_rates=[1, 2]", "train_deeplab.max_steps=2", "train_deeplab.per_device_train_batch_size=2",
        "train_deeplab.dataloader_num_workers=0", "train_deeplab.test_scales=[1.0, 0.5]", "train_deeplab.report_to=none",
    ]  # fmt: skip
    command = [sys.executable, "-m", "cpfcte_hf", "run", "--config", preset, "--data_root", root,
               "--output_dir", str(out), "--crf_workers", "0", "--override", *sizes]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    assert [name for name, entry in summary["steps"].items() if entry["status"] != "ran"] == []
    assert "data" not in summary["steps"]  # the dataset is read where it is, not written

    # Stage 1 ran the dataset's recipe (paper + ViT-PCM), not the defaults.
    stage1 = json.loads((out / "stage1" / "run_config.json").read_text())
    training, model = stage1["CPFCTETrainingArguments"], stage1["ModelArguments"]
    assert training["max_grad_norm"] == 0.0 and training["adam_epsilon"] == 1e-7
    assert training["stage2_fresh_optimizer"] is True and training["equivariance_loss_weight"] == 0.0
    assert model["context_fusion_lstm_dropout_mode"] == "per_sequence" and model["hidden_dropout_prob"] == 0.1
    assert model["pooling"] == "topk" and model["use_class_tokens"] and model["context_fusion_projection"]
    assert stage1["DataArguments"]["train_split"] == train_split

    # Pseudo-labels of every training image; stage 2 with kazuto1011's loss and groups from the ResNet checkpoint.
    assert len(list((out / "pseudo_labels" / "crf").glob("*.png"))) == 4
    stage2 = json.loads((out / "stage2" / "run_args.json").read_text())
    assert stage2["DeepLabV2TrainingArguments"]["multi_scale_loss"] is True
    assert stage2["DeepLabV2TrainingArguments"]["lr_groups"] == "deeplab_v2"
    assert stage2["DeepLabV2TrainingArguments"]["max_grad_norm"] == 0.0
    assert stage2["DeepLabModelArguments"]["backbone"] == str(resnet)
    assert len(list((out / "stage2" / "predictions" / "val" / "ms_crf").glob("*.png"))) == 2

    # The card names the dataset and labels the paper's numbers as the paper's.
    card = (out / "hub" / "README.md").read_text()
    assert dataset_name in card and "paper" in card.lower()
    assert set(summary["mean_iou"]) >= {"stage1_tagged_crf", "stage2"}
