"""Stage 2 as kazuto1011/deeplab-pytorch trains it: MSC loss, Caffe LR groups, and its COCO-init checkpoint."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import default_data_collator

from cpfcte_hf.deeplab import IMAGENET_MEAN, IMAGENET_STD, DeepLabV2ForSemanticSegmentation
from cpfcte_hf.models.deeplab_v2.convert import (
    CAFFE_MEAN_RGB,
    config_from_kazuto_state_dict,
    convert_kazuto_state_dict,
    kazuto_key_to_ours,
    load_kazuto_checkpoint,
)
from cpfcte_hf.stage2.losses import multi_scale_training_loss, resize_labels_nearest
from cpfcte_hf.stage2.optim import sgd_parameter_groups
from cpfcte_hf.stage2.trainer import DeepLabV2Trainer, DeepLabV2TrainingArguments
from tests.deeplab_helpers import tiny_deeplab_config


# --- the multi-scale training loss ---------------------------------------------------------------------------------


def test_labels_are_resized_like_pil_nearest():
    labels = torch.randint(0, 5, (2, 41, 37))
    resized = resize_labels_nearest(labels, (11, 10))
    for image, small in zip(labels, resized):
        expected = Image.fromarray(image.numpy().astype("uint8")).resize((10, 11), resample=Image.NEAREST)
        assert torch.equal(small, torch.from_numpy(np.array(expected)).long())


def test_multi_scale_loss_is_the_sum_over_scales_and_the_max_fusion():
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).train()
    pixel_values = torch.randn(2, 3, 41, 41)
    labels = torch.randint(0, 3, (2, 41, 41))
    labels[:, :3] = 255
    loss, outputs = multi_scale_training_loss(model, pixel_values, labels, (1.0, 0.75, 0.5))

    # By hand, as kazuto1011's MSC + main.py.
    full = model(pixel_values).logits
    small = [
        model(F.interpolate(pixel_values, scale_factor=s, mode="bilinear", align_corners=False)).logits
        for s in (0.75, 0.5)
    ]
    fused = torch.stack([full] + [F.interpolate(x, size=full.shape[-2:], mode="bilinear") for x in small]).amax(0)
    expected = 0.0
    for logits in [full, *small, fused]:
        target = resize_labels_nearest(labels, logits.shape[-2:])
        expected = expected + F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(loss, expected)
    assert [x.shape[-1] for x in [full, *small]] == [6, 4, 3]  # three different logit sizes
    torch.testing.assert_close(outputs.logits, full)
    # Not the single-scale loss (logits upsampled to the labels).
    assert not torch.allclose(loss, model(pixel_values, labels=labels).loss)


def test_trainer_uses_the_multi_scale_loss_when_asked(tmp_path):
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    batch = {"pixel_values": torch.randn(2, 3, 33, 33), "labels": torch.randint(0, 3, (2, 33, 33))}
    losses = {}
    for multi_scale in (False, True):
        args = DeepLabV2TrainingArguments(
            output_dir=str(tmp_path), max_steps=1, use_cpu=True, report_to="none", multi_scale_loss=multi_scale
        )
        trainer = DeepLabV2Trainer(model=model, args=args, data_collator=default_data_collator)
        model.train()
        losses[multi_scale] = trainer.compute_loss(model, batch)
    single = model(**batch).loss
    torch.testing.assert_close(losses[False], single)
    ms, _ = multi_scale_training_loss(model, batch["pixel_values"], batch["labels"])
    torch.testing.assert_close(losses[True], ms)


# --- Caffe's LR groups ---------------------------------------------------------------------------------------------


def test_deeplab_v2_lr_groups():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())  # BatchNorm frozen (the default)
    backbone, weights, biases = sgd_parameter_groups(model, 2.5e-4, 5e-4, 10.0, lr_groups="deeplab_v2")
    convolutions = [m for m in model.resnet.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in backbone["params"]} == {id(m.weight) for m in convolutions}
    assert backbone["lr"] == 2.5e-4 and backbone["weight_decay"] == 5e-4
    assert {id(p) for p in weights["params"]} == {id(b.weight) for b in model.aspp.branches}
    assert weights["lr"] == pytest.approx(2.5e-3) and weights["weight_decay"] == 5e-4
    assert {id(p) for p in biases["params"]} == {id(b.bias) for b in model.aspp.branches}
    assert biases["lr"] == pytest.approx(5e-3) and biases["weight_decay"] == 0.0
    optimised = {id(p) for group in (backbone, weights, biases) for p in group["params"]}
    batch_norm = {id(p) for n, p in model.named_parameters() if "normalization" in n}
    assert batch_norm and not optimised & batch_norm
    # Today's two groups remain: the ASPP biases there share the weights' 10x and weight decay.
    old_backbone, classifier = sgd_parameter_groups(model, 2.5e-4, 5e-4, 10.0)
    assert classifier["weight_decay"] == 5e-4 and len(classifier["params"]) == 2 * len(model.aspp.branches)
    with pytest.raises(ValueError, match="lr_groups"):
        DeepLabV2TrainingArguments(output_dir="unused", lr_groups="caffe")


# --- kazuto1011's checkpoint -------------------------------------------------------------------------------------


def _kazuto_state_dict(n_blocks=(1, 2, 1, 1), channels=8, num_classes=5, aspp_rates=None, prefix=""):
    """A synthetic state dict with the names and shapes of kazuto1011's DeepLabV1 / DeepLabV2 (libs/models/)."""
    generator = torch.Generator().manual_seed(0)
    ch = [channels * 2**p for p in range(6)]
    state = {}

    def conv_bn(name, in_ch, out_ch, kernel):
        state[f"{name}.conv.weight"] = torch.randn(out_ch, in_ch, kernel, kernel, generator=generator) * 0.1
        state[f"{name}.bn.weight"] = torch.rand(out_ch, generator=generator) + 0.5
        state[f"{name}.bn.bias"] = torch.randn(out_ch, generator=generator) * 0.1
        state[f"{name}.bn.running_mean"] = torch.randn(out_ch, generator=generator) * 0.1
        state[f"{name}.bn.running_var"] = torch.rand(out_ch, generator=generator) + 0.5
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)

    conv_bn("layer1.conv1", 3, ch[0], 7)
    in_out = [(ch[0], ch[2]), (ch[2], ch[3]), (ch[3], ch[4]), (ch[4], ch[5])]
    for layer, (blocks, (in_ch, out_ch)) in enumerate(zip(n_blocks, in_out), start=2):
        mid = out_ch // 4
        for block in range(1, blocks + 1):
            name = f"layer{layer}.block{block}"
            conv_bn(f"{name}.reduce", in_ch if block == 1 else out_ch, mid, 1)
            conv_bn(f"{name}.conv3x3", mid, mid, 3)
            conv_bn(f"{name}.increase", mid, out_ch, 1)
            if block == 1:
                conv_bn(f"{name}.shortcut", in_ch, out_ch, 1)
    if aspp_rates is None:  # DeepLabV1: the COCO init's 1x1 classifier
        state["fc.weight"] = torch.randn(num_classes, ch[5], 1, 1, generator=generator)
        state["fc.bias"] = torch.randn(num_classes, generator=generator)
    else:
        for i, _ in enumerate(aspp_rates):
            state[f"aspp.c{i}.weight"] = torch.randn(num_classes, ch[5], 3, 3, generator=generator) * 0.01
            state[f"aspp.c{i}.bias"] = torch.randn(num_classes, generator=generator)
    return {prefix + key: value for key, value in state.items()}


def test_coco_init_checkpoint_converts_key_for_key(tmp_path):
    state = _kazuto_state_dict()
    config = config_from_kazuto_state_dict(state, num_labels=3, atrous_rates=[1, 2, 3, 4])
    assert config.backbone_config.depths == [1, 2, 1, 1] and config.backbone_config.downsample_in_bottleneck
    model, report = convert_kazuto_state_dict(state, DeepLabV2ForSemanticSegmentation(config), caffe_input=False)
    ours = model.state_dict()
    assert report["dropped"] == ["fc.bias", "fc.weight"]
    assert len(report["loaded"]) == len(state) - 2 and report["kept_initial"] == sorted(
        k for k in ours if k.startswith("aspp.")
    )
    for key, value in state.items():
        target = kazuto_key_to_ours(key)
        if target is not None:
            assert torch.equal(ours[target], value), key
    # The Caffe ResNet strides in the first 1x1 convolution of a block, and so does the converted model.
    assert model.resnet.encoder.stages[1].layers[0].layer[0].convolution.stride == (2, 2)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 65, 65)).logits
    assert logits.shape == (1, 3, 9, 9) and torch.isfinite(logits).all()
    # The same through a .pth file, with kazuto1011's MSC prefix.
    torch.save(_kazuto_state_dict(prefix="base."), tmp_path / "init.pth")
    loaded = load_kazuto_checkpoint(tmp_path / "init.pth", caffe_input=False, num_labels=3, atrous_rates=[1, 2, 3, 4])
    torch.testing.assert_close(loaded.resnet.state_dict(), model.resnet.state_dict())


def test_caffe_input_is_moved_into_the_stem():
    """Caffe's stem on BGR 0..255 minus its mean == the converted stem on ImageNet-normalised RGB (off the border)."""
    state = _kazuto_state_dict()
    config = config_from_kazuto_state_dict(state, num_labels=3, atrous_rates=[1, 2, 3, 4])
    model, _ = convert_kazuto_state_dict(state, DeepLabV2ForSemanticSegmentation(config))
    model.eval()
    rgb = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    caffe = (rgb * 255.0 - torch.tensor(CAFFE_MEAN_RGB, dtype=torch.float64).view(1, 3, 1, 1)).flip(1)
    ours_input = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    reference_conv = nn.Conv2d(3, 8, 7, 2, 3, bias=False).double()
    reference_conv.weight.data = state["layer1.conv1.conv.weight"].double()
    reference_bn = nn.BatchNorm2d(8).double().eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(reference_bn, name).data = state[f"layer1.conv1.bn.{name}"].double()
    stem = model.resnet.embedder.embedder
    with torch.no_grad():
        expected = reference_bn(reference_conv(caffe))
        ours = stem.normalization.double()(stem.convolution.double()(ours_input.double()))
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # outputs whose 7x7 window has no padding
    # float32 weights: exact up to float32 rounding
    torch.testing.assert_close(ours[interior], expected[interior], rtol=1e-3, atol=1e-4)
    assert (ours - expected).abs().max() < 0.05 * expected.abs().max()  # at the border: one intensity level off


def test_trained_deeplab_v2_checkpoint_keeps_its_aspp():
    state = _kazuto_state_dict(num_classes=3, aspp_rates=[1, 2, 3, 4], prefix="base.")
    config = config_from_kazuto_state_dict(state, num_labels=3, atrous_rates=[1, 2, 3, 4])
    model, report = convert_kazuto_state_dict(state, DeepLabV2ForSemanticSegmentation(config))
    assert report["dropped"] == [] and report["kept_initial"] == []
    torch.testing.assert_close(model.aspp.branches[2].weight, state["base.aspp.c2.weight"])


def test_missing_extra_and_misshaped_keys_are_named():
    state = _kazuto_state_dict()
    model = DeepLabV2ForSemanticSegmentation(config_from_kazuto_state_dict(state, num_labels=3))
    extra = {**state, "layer6.block1.reduce.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="layer6.block1.reduce.conv.weight"):
        convert_kazuto_state_dict(extra, model)
    missing = dict(state)
    del missing["layer3.block2.conv3x3.bn.running_var"]
    with pytest.raises(ValueError, match="stages.1.layers.1.layer.1.normalization.running_var"):
        convert_kazuto_state_dict(missing, model)
    misshaped = {**state, "layer2.block1.reduce.conv.weight": torch.zeros(3, 8, 1, 1)}
    with pytest.raises(ValueError, match="layer2.block1.reduce.conv.weight"):
        convert_kazuto_state_dict(misshaped, model)
    with pytest.raises(ValueError, match="Not a kazuto1011"):
        config_from_kazuto_state_dict({"conv.weight": torch.zeros(1)})


def test_run_builds_the_model_from_a_kazuto_checkpoint(tmp_path):
    from cpfcte_hf.stage2.train import DeepLabModelArguments, build_model

    torch.save(_kazuto_state_dict(), tmp_path / "coco_init.pth")
    model = build_model(
        DeepLabModelArguments(init_checkpoint=str(tmp_path / "coco_init.pth"), atrous_rates=[1, 2, 3, 4]),
        ["background", "a", "b"],
    )
    assert model.config.num_labels == 3 and model.config.backbone_config.depths == [1, 2, 1, 1]
    torch.testing.assert_close(
        model.resnet.encoder.stages[3].layers[0].layer[1].convolution.weight,
        _kazuto_state_dict()["layer5.block1.conv3x3.conv.weight"],
    )
