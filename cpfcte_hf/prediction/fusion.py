# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""How stage 2's multi-scale test fuses its scales (`--test_fusion`).

* `image` (ours, the default): each scale of the image is resized (PIL, bilinear) to `8k + 1` sides, every scale's
  logits are upsampled to the image's size with the model's `align_corners` (True), and fused there by their maximum
  (`inference.max_fused_probabilities`).
* `logits` (kazuto1011/deeplab-pytorch, `libs/models/msc.py` + its test's final upsampling): the normalised image at
  its own size is the 1.0 scale; each other scale `s` is that tensor resized to `int(s * H) x int(s * W)` (bilinear,
  `align_corners=False`); the logits of every scale are resized to the 1.0 scale's logit size (bilinear,
  `align_corners=False`) and fused there by their maximum; the fused logits are upsampled to the image size (bilinear,
  `align_corners=False`), then the softmax. With `flip`, each scale also runs flipped, its logits flipped back before
  the maximum (kazuto1011 has no flip).

Both return `(C, H, W)` float32 probabilities on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.cpfcte.image_processing_cpfcte import resize_and_normalize
from ..models.cpfcte.inference import max_fused_probabilities
from .config import TEST_FUSIONS, check_test_fusion  # noqa: F401  (the options' checks live with the options)


@torch.no_grad()
def logit_resolution_max_fusion(
    model,
    image: np.ndarray,
    scales: Sequence[float],
    flip: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> torch.Tensor:
    """kazuto1011's multi-scale test (the module docstring's `logits`) on one `(H, W, 3)` uint8 image."""
    height, width = image.shape[:2]
    device = next(model.parameters()).device
    # The image at its own size, normalised: the tensor every scale is resized from (as MSC resizes its input).
    full = resize_and_normalize(image, (height, width), image_mean, image_std).to(device)
    reference_size, fused = None, None
    for scale in sorted(scales, key=lambda s: s != 1.0):  # the 1.0 scale first: its logits set the fusion's size
        if scale == 1.0:
            inputs = full
        else:
            size = (max(1, int(scale * height)), max(1, int(scale * width)))
            inputs = F.interpolate(full, size=size, mode="bilinear", align_corners=False)
        views = [(inputs, False)] + ([(inputs.flip(-1), True)] if flip else [])
        for pixel_values, is_flipped in views:
            logits = model(pixel_values=pixel_values).logits.float()
            if is_flipped:
                logits = logits.flip(-1)
            if reference_size is None:
                if scale != 1.0:
                    raise ValueError(
                        f"--test_fusion logits fuses at the 1.0 scale's logits: add 1.0 to {list(scales)}."
                    )
                reference_size = logits.shape[-2:]
            elif logits.shape[-2:] != reference_size:
                logits = F.interpolate(logits, size=reference_size, mode="bilinear", align_corners=False)
            fused = logits if fused is None else torch.maximum(fused, logits)
    fused = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False)
    return fused.softmax(dim=1)[0].cpu()


def fused_probabilities(
    model,
    image: np.ndarray,
    scales: Sequence[float],
    flip: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    fusion: str = "image",
) -> torch.Tensor:
    """Stage 2's multi-scale probabilities of one image with the chosen `fusion` (`TEST_FUSIONS`)."""
    if check_test_fusion(fusion) == "logits":
        return logit_resolution_max_fusion(model, image, scales, flip, image_mean, image_std)
    return max_fused_probabilities(model, image, scales, flip, image_mean, image_std)


__all__ = ["TEST_FUSIONS", "check_test_fusion", "fused_probabilities", "logit_resolution_max_fusion"]
