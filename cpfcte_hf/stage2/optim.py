# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's parameter groups: kazuto1011's SGD groups (backbone weights x1, ASPP weights x10, ASPP biases x20, no weight
decay on biases), for the Trainer's optimizer and its polynomial schedule.
"""

from __future__ import annotations

import torch

from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation
from ..models.segmenters import DEEPLAB_MODEL_TYPE, body_and_head_parameters


LR_GROUPS = ("backbone_aspp", "deeplab_v2")


def sgd_parameter_groups(
    model: DeepLabV2ForSemanticSegmentation,
    learning_rate: float,
    weight_decay: float,
    classifier_lr_multiplier: float = 10.0,
    lr_groups: str = "backbone_aspp",
) -> list[dict]:
    """
    SGD parameter groups. `"backbone_aspp"`: the trainable backbone at `learning_rate`, the ASPP at
    `classifier_lr_multiplier` x (for another architecture than DeepLab-v2: its encoder or backbone at 1x and its
    decode head at `classifier_lr_multiplier` x, `segmenter.body_and_head_parameters`). `"deeplab_v2"`
    (kazuto1011's `main.py` `get_params`, after Caffe's `lr_mult`/`decay_mult`): the backbone's convolution weights
    at 1x, the ASPP weights at `classifier_lr_multiplier` x, the ASPP biases at twice that without weight decay;
    nothing else (BatchNorm) is optimised.
    """
    if lr_groups not in LR_GROUPS:
        raise ValueError(f"`lr_groups` must be one of {LR_GROUPS}, got {lr_groups!r}.")
    if lr_groups == "deeplab_v2":
        if model.config.model_type != DEEPLAB_MODEL_TYPE:
            raise ValueError(f"`lr_groups` deeplab_v2 is DeepLab-v2's; {model.config.model_type} takes backbone_aspp.")
        convolutions = [m for m in model.resnet.modules() if isinstance(m, torch.nn.Conv2d)]
        branches = list(model.aspp.branches)
        return [
            {
                "params": [m.weight for m in convolutions if m.weight.requires_grad],
                "lr": learning_rate,
                "weight_decay": weight_decay,
                "name": "backbone",
            },
            {
                "params": [m.weight for m in branches],
                "lr": learning_rate * classifier_lr_multiplier,
                "weight_decay": weight_decay,
                "name": "aspp_weight",
            },
            {
                "params": [m.bias for m in branches],
                "lr": learning_rate * 2 * classifier_lr_multiplier,
                "weight_decay": 0.0,
                "name": "aspp_bias",
            },
        ]
    backbone, classifier = body_and_head_parameters(model)
    return [
        {"params": backbone, "lr": learning_rate, "weight_decay": weight_decay, "name": "backbone"},
        {
            "params": classifier,
            "lr": learning_rate * classifier_lr_multiplier,
            "weight_decay": weight_decay,
            "name": "classifier",
        },
    ]
