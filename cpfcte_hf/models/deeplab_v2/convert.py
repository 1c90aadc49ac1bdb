# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Converting kazuto1011/deeplab-pytorch checkpoints to `DeepLabV2ForSemanticSegmentation`.

The DeepLab-v2 stage 2 that WSSS papers (ViT-PCM among them) train starts from the COCO-pretrained ResNet-101 of
the original Caffe DeepLab, which kazuto1011/deeplab-pytorch converts to a PyTorch state dict
(`deeplabv1_resnet101-coco.pth`, a `DeepLabV1`: `libs/models/deeplabv1.py`, `resnet.py`). Its key names:

    [base.]layer1.conv1.{conv,bn}.*                              the 7x7 stem
    [base.]layer{2..5}.block{b}.{reduce,conv3x3,increase,shortcut}.{conv,bn}.*
    [base.]aspp.c{i}.{weight,bias}                               DeepLab-v2 ASPP (a trained DeepLabV2[_MSC])
    [base.]fc.{weight,bias}                                      DeepLabV1's 1x1 COCO classifier (not used)

map one to one onto transformers' ResNet inside our model, with `downsample_in_bottleneck=True` (Caffe's ResNet
strides in the first 1x1 convolution of a block, as kazuto1011's `_Bottleneck.reduce` does):

    layer1.conv1.conv / .bn                 -> resnet.embedder.embedder.convolution / .normalization
    layer{L}.block{b}.reduce|conv3x3|increase -> resnet.encoder.stages.{L-2}.layers.{b-1}.layer.{0|1|2}
    layer{L}.block{b}.shortcut              -> resnet.encoder.stages.{L-2}.layers.{b-1}.shortcut
    .conv.weight / .bn.*                    -> .convolution.weight / .normalization.*
    aspp.c{i}                               -> aspp.branches.{i}

As kazuto1011's `main.py` does (`load_state_dict(strict=False)` "to skip ASPP"), the COCO classifier `fc` is dropped
and an ASPP absent from the checkpoint keeps its fresh N(0, 0.01) initialisation. Every other key must map, and
every backbone parameter must be covered, with the same shape; otherwise a `ValueError` names the keys.

The Caffe network reads BGR images in 0..255 minus the mean colour (122.675, 116.669, 104.008 in R, G, B; no
scaling); every model of this package reads RGB normalised with ImageNet mean and std (`deeplab_image_processor`).
With `caffe_input=True` (the default) the conversion moves that difference into the weights: the stem convolution's
input channels are reordered and scaled by 255 x std, and the constant the mean difference adds is subtracted from
the stem BatchNorm's running mean. The converted model is then exact wherever the 7x7 stem sees no padding; where
it does, its zero padding is ImageNet's mean colour, one intensity level from Caffe's.

One difference remains that no weight can carry: kazuto1011's stem max pool uses `ceil_mode=True`, transformers'
does not; the two give the same size for odd inputs (DeepLab's 321 and 513 crops) and differ by one for even ones.
"""

from __future__ import annotations

import os
import re

import torch

from .configuration_deeplab import DeepLabV2Config, resnet101_config
from .modeling_deeplab import DeepLabV2ForSemanticSegmentation
from .processing import IMAGENET_MEAN, IMAGENET_STD


# kazuto1011's configs/*.yaml IMAGE.MEAN (R, G, B), subtracted from BGR images in 0..255.
CAFFE_MEAN_RGB = (122.675, 116.669, 104.008)
_BRANCH = {"reduce": "layer.0", "conv3x3": "layer.1", "increase": "layer.2", "shortcut": "shortcut"}
_PART = {"conv": "convolution", "bn": "normalization"}
_BLOCK_KEY = re.compile(r"^layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase|shortcut)\.(conv|bn)\.(\w+)$")
_STEM_KEY = re.compile(r"^layer1\.conv1\.(conv|bn)\.(\w+)$")
_ASPP_KEY = re.compile(r"^aspp\.c(\d+)\.(weight|bias)$")
_DROPPED_KEY = re.compile(r"^fc\d*\.(weight|bias)$")


def kazuto_key_to_ours(key: str) -> str | None:
    """Our parameter name for one kazuto1011 key (without `base.`), None for a key that is dropped (`fc`)."""
    if match := _STEM_KEY.match(key):
        return f"resnet.embedder.embedder.{_PART[match.group(1)]}.{match.group(2)}"
    if match := _BLOCK_KEY.match(key):
        layer, block, branch, part, name = match.groups()
        stage = int(layer) - 2
        return f"resnet.encoder.stages.{stage}.layers.{int(block) - 1}.{_BRANCH[branch]}.{_PART[part]}.{name}"
    if match := _ASPP_KEY.match(key):
        return f"aspp.branches.{match.group(1)}.{match.group(2)}"
    if _DROPPED_KEY.match(key):
        return None
    raise ValueError(f"Unexpected key {key!r} in the kazuto1011 DeepLab checkpoint: no DeepLab-v2 parameter has it.")


def _strip_prefix(state_dict: dict) -> dict:
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    stripped = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "base."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        stripped[key] = value
    return stripped


def config_from_kazuto_state_dict(state_dict: dict, **config_kwargs) -> DeepLabV2Config:
    """
    The `DeepLabV2Config` whose model has the checkpoint's backbone: depths counted from the `block{b}` keys, widths
    read from the shapes, `downsample_in_bottleneck=True`. `config_kwargs` (e.g. `id2label`) go to the config; the
    ASPP rates, when the checkpoint has an ASPP, must be given (they are not in the weights; DeepLab-v2: 6/12/18/24).
    """
    state_dict = _strip_prefix(state_dict)
    depths = [0, 0, 0, 0]
    for key in state_dict:
        if match := _BLOCK_KEY.match(key):
            depths[int(match.group(1)) - 2] = max(depths[int(match.group(1)) - 2], int(match.group(2)))
    if "layer1.conv1.conv.weight" not in state_dict or not all(depths):
        raise ValueError(
            "Not a kazuto1011 DeepLab ResNet state dict: expected layer1.conv1.conv.weight and "
            f"layer2..layer5.block<b> keys, found e.g. {sorted(state_dict)[:5]}."
        )
    hidden_sizes = [int(state_dict[f"layer{layer}.block1.increase.conv.weight"].shape[0]) for layer in range(2, 6)]
    backbone = resnet101_config(
        depths=depths,
        hidden_sizes=hidden_sizes,
        embedding_size=int(state_dict["layer1.conv1.conv.weight"].shape[0]),
        downsample_in_bottleneck=True,
    )
    return DeepLabV2Config(backbone_config=backbone, **config_kwargs)


def caffe_stem_to_normalized_rgb(
    conv_weight: torch.Tensor,
    running_mean: torch.Tensor,
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    caffe_mean_rgb=CAFFE_MEAN_RGB,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The stem convolution `(out, 3, k, k)` and BatchNorm running mean `(out,)` of a network reading Caffe input
    (BGR, 0..255, mean colour subtracted) rewritten for input normalised as `(rgb01 - image_mean) / image_std`.

    With `x_caffe[bgr(c)] = 255 * (x[c] * std[c] + mean[c]) - caffe_mean[c]`, the convolution `W` becomes
    `W'[:, c] = 255 * std[c] * W[:, bgr(c)]` plus a constant per output channel `sum W[:, bgr(c)] * (255 * mean[c] -
    caffe_mean[c])`, which the BatchNorm absorbs as a shift of its running mean.
    """
    weight = conv_weight.double().flip(1)  # BGR -> RGB input channels
    std = torch.tensor(image_std, dtype=torch.float64).view(1, 3, 1, 1)
    offset = 255.0 * torch.tensor(image_mean, dtype=torch.float64) - torch.tensor(caffe_mean_rgb, dtype=torch.float64)
    constant = (weight * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    new_weight = (weight * 255.0 * std).to(conv_weight.dtype)
    new_mean = (running_mean.double() - constant).to(running_mean.dtype)
    return new_weight, new_mean


def convert_kazuto_state_dict(
    state_dict: dict, model: DeepLabV2ForSemanticSegmentation, caffe_input: bool = True
) -> tuple[DeepLabV2ForSemanticSegmentation, dict]:
    """
    Loads a kazuto1011 state dict into `model` (built from `config_from_kazuto_state_dict`), strictly except for the
    dropped `fc` and an ASPP the checkpoint lacks. With `caffe_input` (kazuto1011's converted caffemodels) the stem
    is rewritten for ImageNet-normalised RGB input (`caffe_stem_to_normalized_rgb`). Returns the model and
    `{"loaded", "dropped", "kept_initial"}` key lists.

    Raises:
        ValueError naming the keys: an unknown key, a shape that differs, or a backbone parameter the checkpoint lacks.
    """
    state_dict = _strip_prefix(state_dict)
    target = model.state_dict()
    converted, dropped, mismatched = {}, [], []
    for key, value in state_dict.items():
        ours = kazuto_key_to_ours(key)
        if ours is None:
            dropped.append(key)
            continue
        if ours not in target:
            raise ValueError(f"Key {key!r} maps to {ours!r}, which this model does not have (a different depth?).")
        if tuple(value.shape) != tuple(target[ours].shape):
            mismatched.append(f"{key} {tuple(value.shape)} -> {ours} {tuple(target[ours].shape)}")
            continue
        converted[ours] = value
    if mismatched:
        raise ValueError("Shapes differ between the checkpoint and the model: " + "; ".join(mismatched[:10]))
    missing = sorted(set(target) - set(converted))
    aspp_missing = [key for key in missing if key.startswith("aspp.")]
    backbone_missing = [key for key in missing if not key.startswith("aspp.")]
    if backbone_missing:
        raise ValueError(
            f"The checkpoint lacks {len(backbone_missing)} backbone parameter(s) of the model, "
            f"e.g. {backbone_missing[:5]}."
        )
    if aspp_missing and len(aspp_missing) != len([k for k in target if k.startswith("aspp.")]):
        raise ValueError(f"The checkpoint has part of an ASPP only: missing {aspp_missing}.")
    if caffe_input:
        conv, mean = (
            "resnet.embedder.embedder.convolution.weight",
            "resnet.embedder.embedder.normalization.running_mean",
        )
        converted[conv], converted[mean] = caffe_stem_to_normalized_rgb(converted[conv], converted[mean])
    model.load_state_dict(converted, strict=False)
    return model, {"loaded": sorted(converted), "dropped": sorted(dropped), "kept_initial": aspp_missing}


def load_kazuto_checkpoint(
    path: str | os.PathLike, caffe_input: bool = True, **config_kwargs
) -> DeepLabV2ForSemanticSegmentation:
    """
    `DeepLabV2ForSemanticSegmentation` from a kazuto1011 `.pth` (e.g. `deeplabv1_resnet101-coco.pth`, the COCO init
    of `configs/voc12.yaml`'s `INIT_MODEL`). `config_kwargs` (e.g. `id2label`) build the config.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No kazuto1011 checkpoint at {path}.")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    config = config_from_kazuto_state_dict(state_dict, **config_kwargs)
    model, _ = convert_kazuto_state_dict(state_dict, DeepLabV2ForSemanticSegmentation(config), caffe_input)
    return model


__all__ = [
    "CAFFE_MEAN_RGB",
    "caffe_stem_to_normalized_rgb",
    "config_from_kazuto_state_dict",
    "convert_kazuto_state_dict",
    "kazuto_key_to_ours",
    "load_kazuto_checkpoint",
]
