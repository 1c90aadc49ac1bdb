# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's parameter groups: kazuto1011's SGD groups (backbone weights x1, ASPP weights x10, ASPP biases x20, no weight
decay on biases), for the Trainer's optimizer and its polynomial schedule.
"""

from __future__ import annotations

import torch

from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation


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
    `classifier_lr_multiplier` x. `"deeplab_v2"` (kazuto1011's `main.py` `get_params`, after Caffe's
    `lr_mult`/`decay_mult`): the backbone's convolution weights at 1x, the ASPP weights at `classifier_lr_multiplier`
    x, the ASPP biases at twice that without weight decay; nothing else (BatchNorm) is optimised.
    """
    if lr_groups not in LR_GROUPS:
        raise ValueError(f"`lr_groups` must be one of {LR_GROUPS}, got {lr_groups!r}.")
    if lr_groups == "deeplab_v2":
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
    classifier = [p for p in model.aspp.parameters() if p.requires_grad]
    classifier_ids = {id(p) for p in classifier}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in classifier_ids]
    return [
        {"params": backbone, "lr": learning_rate, "weight_decay": weight_decay, "name": "backbone"},
        {
            "params": classifier,
            "lr": learning_rate * classifier_lr_multiplier,
            "weight_decay": weight_decay,
            "name": "classifier",
        },
    ]
