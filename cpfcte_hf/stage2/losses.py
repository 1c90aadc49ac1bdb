# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's loss: DeepLab-v2's multi-scale training loss (MSC: the logits of the 1.0, 0.75 and 0.5 inputs and their
max, each scored against the labels resized by nearest neighbour, 255 ignored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.cpfcte.metrics import IGNORE_INDEX
from ..prediction.config import MULTI_SCALE


def resize_labels_nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    Class-id maps `(B, H, W)` resized to `size` by nearest neighbour at pixel centres (source pixel
    `floor((i + 0.5) * H / h)`), which is PIL's NEAREST that kazuto1011's `resize_labels` uses.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()


def multi_scale_training_loss(
    model,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    scales=MULTI_SCALE,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, object]:
    """
    DeepLab-v2's multi-scale (MSC) training loss, as kazuto1011's `libs/models/msc.py` and `main.py` compute it.

    The crop `(B, 3, H, W)` runs at each of `scales` (the first is the reference, 1.0; the others resized bilinearly,
    `align_corners=False`); the logits of every scale are resized bilinearly to the reference logits' size and fused
    by their element-wise maximum. The loss is the sum of the cross-entropies of every scale's logits and of the
    fused logits, each against `labels` `(B, H, W)` resized (nearest) to that logits' own size.

    Returns `(loss, outputs of the reference scale)`.
    """
    outputs = model(pixel_values=pixel_values)
    reference = outputs.logits
    size = reference.shape[-2:]
    pyramid = [reference]
    for scale in scales[1:]:
        scaled = F.interpolate(pixel_values, scale_factor=float(scale), mode="bilinear", align_corners=False)
        pyramid.append(model(pixel_values=scaled).logits)
    fused = torch.stack(
        [reference] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in pyramid[1:]]
    ).amax(dim=0)
    loss = 0.0
    for logits in pyramid + [fused]:
        target = resize_labels_nearest(labels, logits.shape[-2:])
        if (target != ignore_index).any():
            loss = loss + F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
        else:  # a crop without labelled pixels: a zero that keeps the graph (see `compute_loss` of the model)
            loss = loss + logits.float().sum() * 0.0
    return loss, outputs
