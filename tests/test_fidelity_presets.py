"""Every preset parses into the training dataclasses, states its clipping, and says where each value comes from."""

import re

import pytest

from cpfcte_hf.stage1.train import DataArguments, ModelArguments
from cpfcte_hf.stage1.trainer import CPFCTETrainingArguments
from cpfcte_hf.stage2.train import parse_arguments as parse_deeplab_arguments
from cpfcte_hf.utils.arguments import parse_args_with_presets
from cpfcte_hf.workflows.reproduce import preset_path


STAGE1 = [
    "voc",
    "voc-vitpcm",
    "voc-plus",
    "coco",
    "coco-vitpcm",
    "coco-plus",
    "shapes",
    "shapes-reproduce",
    "shapes-grid24",
]
DEEPLAB = ["deeplab_voc", "deeplab_coco", "deeplab_voc_coco_init", "deeplab_coco_coco_init", "deeplab_shapes"]
# The presets whose every value is traced to the paper, a reference file, or our own measurement.
SOURCED = ["voc", "voc-vitpcm", "voc-plus", "coco", "coco-vitpcm", "coco-plus", "shapes-reproduce", "shapes-grid24"]
SOURCE_WORDS = re.compile(r"#.*\b(paper|ViT-PCM|vit-keras|Keras|kazuto1011|ours)\b")


def _path(name):
    # Wherever the presets live (scripts/configs/ now, cpfcte_hf/presets/ after the CLI work).
    return str(preset_path(name))


def _stage1(name, *extra):
    # bf16 needs a GPU: the parse is what is tested here.
    return parse_args_with_presets(
        (ModelArguments, DataArguments, CPFCTETrainingArguments), ["--config", _path(name), "--bf16", "false", *extra]
    )


@pytest.mark.parametrize("name", STAGE1)
def test_stage1_presets_parse_and_state_clipping_and_epsilon(name):
    model, data, training = _stage1(name)
    text = open(_path(name)).read()
    assert re.search(r"^max_grad_norm:", text, re.M) and re.search(r"^adam_epsilon:", text, re.M)
    if not name.startswith("shapes"):
        assert training.max_grad_norm == 0.0 and training.adam_epsilon == 1e-7  # no clipping, Keras' epsilon
        assert training.stage2_fresh_optimizer and model.hidden_dropout_prob == 0.1
        assert model.context_fusion_lstm_dropout_mode == "per_sequence"


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_the_three_recipes_differ_where_they_should(dataset):
    paper, *_ = _stage1(dataset)
    vitpcm_model, _, vitpcm = _stage1(f"{dataset}-vitpcm")
    plus_model, _, plus = _stage1(f"{dataset}-plus")
    _, _, paper_training = _stage1(dataset)
    assert paper.use_class_tokens and paper.context_fusion_projection and paper.pooling == "topk"
    assert paper_training.equivariance_loss_weight == 0.0
    assert not vitpcm_model.use_class_tokens and not vitpcm_model.context_fusion_projection
    assert vitpcm_model.pooling == "max" and vitpcm.equivariance_loss_weight == 1.0
    assert vitpcm.num_train_epochs == 80 and vitpcm.stage1_epochs == 1 and vitpcm.per_device_train_batch_size == 16
    assert plus_model == paper and plus.equivariance_loss_weight == 1.0


@pytest.mark.parametrize("name", SOURCED)
def test_every_value_says_where_it_comes_from(name):
    for number, line in enumerate(open(_path(name)), start=1):
        if line.strip() and not line.startswith("#"):
            assert SOURCE_WORDS.search(line), f"{name}.yaml:{number} has no source: {line.rstrip()}"


@pytest.mark.parametrize("name", DEEPLAB)
def test_deeplab_presets_parse_and_state_clipping(name):
    _, model, _, _, training = parse_deeplab_arguments(["--config", _path(name)])
    assert re.search(r"^max_grad_norm:", open(_path(name)).read(), re.M)
    if name != "deeplab_shapes":
        assert training.multi_scale_loss and training.lr_groups == "deeplab_v2" and training.max_grad_norm == 0.0
    if name.endswith("coco_init"):
        assert model.init_checkpoint.endswith("deeplabv1_resnet101-coco.pth")
