# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The geometry of the CRF's input: how the patch-grid probabilities reach the image's pixels (`--crf_upsampling`).

* `align_corners` (ours, the default): the same map as the baseline mask (BPM), bilinear with `align_corners=True`
  (the grid's corner patches sit on the image's corner pixels), as ViT-PCM upsamples for its BPM and its mIoU
  (`utils.resize` on a tensor: TF1 `tf.image.resize(..., align_corners=True)`).
* `half_pixel` (ViT-PCM's CRF input): ViT-PCM's `test --crf` reads the grid probabilities it saved as `.npy` and
  upsamples them with `utils.resize` on a NumPy array, that is scikit-image `transform.resize(order=1)`: pixel
  centres mapped half-pixel to half-pixel (`align_corners=False`), and the outer half pixel of each side mirrored
  about the edge sample (skimage's `mode="reflect"`), where torch's `align_corners=False` would repeat it. The BPM
  keeps `align_corners`. `half_pixel_resize` reproduces skimage's upsampling exactly (a test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cpfcte_hf.prediction.config import CRF_UPSAMPLING, check_crf_upsampling  # moved

from ..models.cpfcte.inference import forward_views, fuse_views, inference_sizes, make_views


def _half_pixel_axis(maps: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Linear resampling of `maps` along `dim` to `size` samples: output centre j reads input coordinate
    (j + 0.5) * n / size - 0.5, mirrored about the first and last samples when it falls outside them."""
    count = maps.shape[dim]
    if count == size:
        return maps
    coordinates = (torch.arange(size, dtype=torch.float64) + 0.5) * (count / size) - 0.5
    if count > 1:
        period = 2 * (count - 1)  # mirror about the edge samples (skimage "reflect" = scipy.ndimage "mirror")
        coordinates = torch.remainder(coordinates, period)
        coordinates = torch.where(coordinates > count - 1, period - coordinates, coordinates)
    else:
        coordinates = torch.zeros_like(coordinates)
    lower = coordinates.floor().long().clamp(0, count - 1)
    upper = (lower + 1).clamp(max=count - 1)
    weight = (coordinates - lower).to(maps.dtype)
    shape = [1] * maps.dim()
    shape[dim] = size
    weight = weight.view(shape)
    return maps.index_select(dim, lower) * (1 - weight) + maps.index_select(dim, upper) * weight


def half_pixel_resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(..., h, w)` -> `(..., H, W)` with scikit-image's bilinear geometry (`resize(order=1)`, no anti-aliasing,
    which it applies only when shrinking): see the module docstring."""
    maps = _half_pixel_axis(maps, maps.dim() - 2, int(size[0]))
    return _half_pixel_axis(maps, maps.dim() - 1, int(size[1]))


@torch.no_grad()
def predict_with_crf_input(
    model,
    images: Sequence[np.ndarray],
    labels: torch.Tensor | None,
    size,
    scales: Sequence[float],
    flip: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """
    As `inference.predict_class_probabilities`, with one model pass giving each image two `(C, H, W)` maps: the
    BPM's (`align_corners=True`) and the CRF's input (`half_pixel_resize` of each view's grid probabilities,
    averaged over the views). Returns `[(bpm_map, crf_map), ...]` and the image scores.
    """
    views, flipped = make_views(
        images, inference_sizes(size, scales, model.config.patch_size), flip, image_mean, image_std
    )
    view_logits, image_scores = forward_views(model, views)
    targets = [image.shape[:2] for image in images]
    bpm = fuse_views(view_logits, flipped, targets, labels)
    crf = fuse_views(view_logits, flipped, targets, labels, upsample=half_pixel_resize)
    return [(b.cpu(), c.cpu()) for b, c in zip(bpm, crf)], image_scores.cpu()


__all__ = ["CRF_UPSAMPLING", "check_crf_upsampling", "half_pixel_resize", "predict_with_crf_input"]
