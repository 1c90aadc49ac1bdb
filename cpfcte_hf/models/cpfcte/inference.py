# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one inference core: image -> class probability maps, for both stages.

The pipelines (`pipelines`), stage-1 pseudo-labelling (`pseudo_labeling`) and stage-2 prediction
(`prediction.segment`) all go through these steps (docs/method.md sections 3 and 4):

1. resize: the inference sizes (`inference_sizes`; `corner_aligned_sizes` for DeepLab's 8k+1 inputs) and, for the
   CRF, `cap_image_side` / `restore_mask_size`;
2. views: every scale, optionally also flipped left-right (`make_views`);
3. the forward at each view's resolution (`forward_views`);
4. class masking by image-level tags, per-class max normalisation and bilinear upsampling to the image's size,
   views averaged (`fuse_views`, stage 1), or upsampled logits fused by their maximum then the softmax
   (`max_fused_probabilities`, stage 2).

`predict_class_probabilities` (stage 1) and `max_fused_probabilities` (stage 2) chain them for a batch of images.

This module is a leaf: it imports torch, numpy, PIL and, relatively, only `image_processing_cpfcte`,
so that it travels with `pipelines.py` as remote code (`pipeline.save_pretrained`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .image_processing_cpfcte import (
    VIT_PCM_MEAN,
    VIT_PCM_STD,
    class_probability_maps,
    resize_and_normalize,
)


DEFAULT_INFERENCE_SIZE = 960


def multi_hot(class_ids: Iterable[int], num_labels: int) -> torch.Tensor:
    """Class ids -> `(num_labels,)` float multi-hot vector."""
    target = torch.zeros(num_labels, dtype=torch.float32)
    ids = list(class_ids)
    if ids and (min(ids) < 0 or max(ids) >= num_labels):
        raise ValueError(f"Class ids {ids} out of range 0..{num_labels - 1} ({num_labels} classes).")
    target[ids] = 1.0
    return target


def check_image_size(image, patch_size: int, name: str = "image") -> None:
    """Raises a ValueError naming `name` if the image (an array, or its `(height, width)`) is smaller than one
    `patch_size` patch in either side."""
    height, width = image if isinstance(image, tuple) else image.shape[:2]
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"{name} is {width}x{height} pixels, smaller than one {patch_size}x{patch_size} patch: too small to segment."
        )


# ---------------------------------------------------------------------------------------------------------- resize


def inference_sizes(size, scales: Sequence[float], patch_size: int) -> list[tuple[int, int]]:
    """`(height, width)` per scale: `size` (an int or `(h, w)`) times the scale, rounded to a multiple of the patch."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    sizes = []
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"Scales must be > 0, got {scale}.")
        sizes.append(
            (
                max(patch_size, round(height * scale / patch_size) * patch_size),
                max(patch_size, round(width * scale / patch_size) * patch_size),
            )
        )
    return sizes


def corner_aligned_sizes(sizes: Sequence[tuple[int, int]], stride: int) -> list[tuple[int, int]]:
    """
    Each `(height, width)` rounded to the nearest `stride * k + 1` (at least `stride + 1`): a stride-`stride` model's
    logits, upsampled with align_corners=True, then fall exactly on every `stride`-th pixel (DeepLab's 8k+1 inputs;
    at 96 px a stride-8 model's 12x12 logits would drift by up to 7 px).
    """
    return [tuple(max(stride + 1, round((side - 1) / stride) * stride + 1) for side in size) for size in sizes]


def cap_image_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """`image` itself when its longest side is <= `max_side` (or no cap), else a copy downscaled (antialiased,
    aspect ratio kept) so that its longest side is `max_side`."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))


def restore_mask_size(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """A mask made at a capped size, back at the image's `(height, width)` (nearest: class ids stay ids)."""
    if size is None or tuple(mask.shape[:2]) == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST))


# ------------------------------------------------------------------------------------------------ views, forward


def make_views(
    images: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    flip: bool = False,
    image_mean: Sequence[float] = VIT_PCM_MEAN,
    image_std: Sequence[float] = VIT_PCM_STD,
) -> tuple[list[torch.Tensor], list[bool]]:
    """
    `(H, W, 3)` uint8 images -> one `pixel_values` batch `(B, 3, h, w)` per view (every size, each also flipped
    left-right when `flip`), and whether each view is flipped.
    """
    views, flipped = [], []
    for size in sizes:
        pixel_values = resize_and_normalize(list(images), size, image_mean, image_std)
        views.append(pixel_values)
        flipped.append(False)
        if flip:
            views.append(pixel_values.flip(-1))
            flipped.append(True)
    return views, flipped


def forward_views(model, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """
    The model on every view (moved to the model's device): float32 `logits` per view, and the `(B, C)` image-level
    scores averaged over the views (`None` for a model without `image_scores`, such as DeepLab-v2).
    """
    device = next(model.parameters()).device
    view_logits, scores = [], []
    for pixel_values in views:
        outputs = model(pixel_values=pixel_values.to(device))
        view_logits.append(outputs.logits.float())
        if getattr(outputs, "image_scores", None) is not None:
            scores.append(outputs.image_scores.float())
    return view_logits, torch.stack(scores).mean(dim=0) if scores else None


# ----------------------------------------------------------------------------------------------------------- fusion


def fuse_views(
    view_logits: Sequence[torch.Tensor],
    flipped: Sequence[bool],
    target_sizes: Sequence[tuple[int, int]],
    labels: torch.Tensor | None = None,
    upsample=None,
) -> list[torch.Tensor]:
    """
    Patch logits of every view -> one `(C, H, W)` class probability map per image at its original size.
    `upsample(maps, size)`, if given, replaces the align_corners=True upsampling of the grid probabilities (e.g.
    `upsampling.half_pixel_resize`, ViT-PCM's CRF input).

    Each view goes through `class_probability_maps` (softmax, class masking by `labels` `(B, C)` with per-class max
    normalisation, bilinear upsampling with align_corners=True); flipped views are flipped back (on the patch grid:
    align_corners=True upsampling commutes with the flip) and the views are averaged.
    """
    maps = []
    for index, target_size in enumerate(target_sizes):
        total = None
        image_labels = labels[index : index + 1] if labels is not None else None
        for logits, is_flipped in zip(view_logits, flipped):
            image_logits = logits[index : index + 1]
            if is_flipped:
                image_logits = image_logits.flip(-1)
            if upsample is None:
                probabilities = class_probability_maps(image_logits, image_labels, tuple(target_size))[0]
            else:
                probabilities = upsample(class_probability_maps(image_logits, image_labels)[0], tuple(target_size))
            total = probabilities if total is None else total + probabilities
        maps.append(total / len(view_logits))
    return maps


@torch.no_grad()
def predict_class_probabilities(
    model,
    images: Sequence[np.ndarray],
    labels: torch.Tensor | None = None,
    size=DEFAULT_INFERENCE_SIZE,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    image_mean: Sequence[float] = VIT_PCM_MEAN,
    image_std: Sequence[float] = VIT_PCM_STD,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """
    Class probability maps of a batch of images (docs/method.md section 3, steps 1-3).

    Args:
        model: a CPF-CTE model (anything returning `logits` `(B, C, h, w)` and `image_scores` `(B, C)`).
        images: `(H, W, 3)` uint8 RGB images, sizes may differ.
        labels: `(B, C)` multi-hot image-level labels for class masking (training-set pseudo-labels), or `None`.
        size, scales, flip: inference resolution, its multipliers, and whether to add flipped views.
        image_mean, image_std: normalisation (the image processor's).

    Returns:
        `(C, H, W)` float32 maps on the CPU, one per image, and `(B, C)` image scores averaged over the views.
    """
    views, flipped = make_views(
        images, inference_sizes(size, scales, model.config.patch_size), flip, image_mean, image_std
    )
    view_logits, image_scores = forward_views(model, views)
    maps = fuse_views(view_logits, flipped, [image.shape[:2] for image in images], labels)
    return [m.cpu() for m in maps], image_scores.cpu()


@torch.no_grad()
def max_fused_probabilities(
    model,
    image: np.ndarray,
    scales: Sequence[float],
    flip: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> torch.Tensor:
    """
    Class probabilities `(C, H, W)` (float32, CPU) of one `(H, W, 3)` uint8 image by DeepLab-v2's multi-scale
    inference (docs/method.md section 4): the image at each scale of its own size (8k+1 sizes with
    `config.align_corners`, `corner_aligned_sizes`), also flipped with `flip`, every view's logits bilinearly
    upsampled to `(H, W)` (`config.align_corners`), fused by their element-wise maximum, then the softmax.
    """
    height, width = image.shape[:2]
    align_corners = bool(getattr(model.config, "align_corners", False))  # DeepLab-v2: True; transformers' heads: False
    sizes = inference_sizes((height, width), scales, 1)
    if align_corners:
        sizes = corner_aligned_sizes(sizes, model.config.output_stride)
    views, flipped = make_views([image], sizes, flip, image_mean, image_std)
    view_logits, _ = forward_views(model, views)
    fused = None
    for logits, is_flipped in zip(view_logits, flipped):
        if is_flipped:
            logits = logits.flip(-1)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=align_corners)
        fused = logits if fused is None else torch.maximum(fused, logits)
    return fused.softmax(dim=1)[0].cpu()


__all__ = [
    "DEFAULT_INFERENCE_SIZE",
    "cap_image_side",
    "check_image_size",
    "corner_aligned_sizes",
    "forward_views",
    "fuse_views",
    "inference_sizes",
    "make_views",
    "max_fused_probabilities",
    "multi_hot",
    "predict_class_probabilities",
    "restore_mask_size",
]
