# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The geometry of ViT-PCM's equivariance views (L_ET), shared by the images and the patch probabilities.

ViT-PCM (`dataloader.py` `_preprocess_image`, `utils.py` `affine_transform`) gives every training image two views:
the full view (colour jitter, flips, transpose) that the BCE trains on, and a second view with its own colour
jitter, a crop or a downscale, and its own flips. Four second views are tiled into one mosaic at the training size;
the model's patch probabilities on the mosaic are trained towards the full view's (see `stage1/equivariance.py`
`equivariance_loss`). `transforms.EquivarianceTrainTransform` makes the views in the loader.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# A left-right flip, an up-down flip and a transpose of `(..., H, W)`, in ViT-PCM's order; each undoes itself.
FLIP_OPERATIONS = (lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.transpose(-1, -2))


def draw_flips(count: int, hflip_p: float, vflip_p: float, transpose_p: float) -> torch.Tensor:
    """`(count, 3)` bool: a left-right flip, an up-down flip and a transpose, each drawn independently."""
    probabilities = torch.tensor([hflip_p, vflip_p, transpose_p])
    return torch.rand(count, 3) < probabilities


def apply_flips(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flips `(B, ..., H, W)` per item by `flips` `(B, 3)`: left-right, up-down, then transpose (ViT-PCM's order)."""
    return _flip_chosen(x, flips, (0, 1, 2))


def revert_flips(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The inverse of `apply_flips`: transpose, then up-down, then left-right (each undoes itself)."""
    return _flip_chosen(x, flips, (2, 1, 0))


def _flip_chosen(x: torch.Tensor, flips: torch.Tensor, steps: tuple[int, ...]) -> torch.Tensor:
    """A copy of `x` with `FLIP_OPERATIONS[step]` applied, for each step in turn, to the items `flips[:, step]` marks."""
    x = x.clone()
    for step in steps:
        chosen = flips[:, step].to(torch.bool).to(x.device)
        if chosen.any():
            x[chosen] = FLIP_OPERATIONS[step](x[chosen])
    return x


def crop_and_resize(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    `(B, C, H, W)` -> `(B, C, *size)`: each item cropped to its box `(top, left, height, width)` (in `x`'s pixels)
    and resized bilinearly with `align_corners=True` (ViT-PCM's `resize`); a box already of `size` is only cropped.
    """
    outputs = []
    for item, (top, left, height, width) in zip(x, boxes.tolist()):
        crop = item[:, top : top + height, left : left + width]
        if (height, width) != tuple(size):
            crop = F.interpolate(crop[None].float(), size=tuple(size), mode="bilinear", align_corners=True)[0]
        outputs.append(crop.to(x.dtype))
    return torch.stack(outputs)


def make_mosaics(views: torch.Tensor) -> torch.Tensor:
    """`(4M, C, S, S)` -> `(M, C, 2S, 2S)`: every 4 consecutive views tiled as [[0, 1], [2, 3]] (row-major)."""
    count, channels, height, width = views.shape
    if count % 4:
        raise ValueError(f"A mosaic takes 4 views; got {count}.")
    grid = views.reshape(count // 4, 2, 2, channels, height, width)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(count // 4, channels, 2 * height, 2 * width)


def split_mosaics(mosaics: torch.Tensor) -> torch.Tensor:
    """The inverse of `make_mosaics`: `(M, C, 2s, 2s)` -> `(4M, C, s, s)`."""
    count, channels, height, width = mosaics.shape
    grid = mosaics.reshape(count, channels, 2, height // 2, 2, width // 2)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(4 * count, channels, height // 2, width // 2)


@dataclass
class EquivarianceViewConfig:
    """
    The second view of ViT-PCM's L_ET (`configs/voc12.yaml` IMAGE.SIZE and AUGMENTATIONS, `utils.py`).

    Attributes:
        crop_p: probability of a crop (`PROB_CROP`: 0.3); otherwise the whole image is downscaled.
        crop_size: side of the square crop in pixels of the training size (`CROP`: 128 of 384); its corner lies on
            the patch grid.
        scale_size: side the crop (or the whole image) is resized to (`SCALE`: 192 = half the training size, so
            that four views tile one training-size mosaic).
        patch_size: the model's patch size (crops start on multiples of it).
    """

    crop_p: float = 0.3
    crop_size: int = 128
    scale_size: int = 192
    patch_size: int = 16

    def __post_init__(self):
        if not 0 <= self.crop_p <= 1:
            raise ValueError(f"crop_p must be a probability, got {self.crop_p}.")
        for name in ("crop_size", "scale_size"):
            if getattr(self, name) % self.patch_size or getattr(self, name) < self.patch_size:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of the patch size {self.patch_size}."
                )

    def check_training_size(self, size: int) -> None:
        """Refuses a training size that four views of `scale_size` do not tile (the mosaic of `make_mosaics`)."""
        if 2 * self.scale_size != size:
            raise ValueError(
                f"Four {self.scale_size}-px views must tile the {size}-px training size: set scale_size to "
                f"{size // 2}."
            )

    def draw_boxes(self, count: int, image_size: int) -> torch.Tensor:
        """`(count, 4)` int64 crop boxes `(top, left, height, width)` in pixels: a patch-aligned crop with `crop_p`,
        else the whole image (ViT-PCM `bbox_for_crop`: corners drawn from 0, p, 2p, ..., clipped to fit)."""
        if self.crop_size > image_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds the training size {image_size}.")
        boxes = torch.tensor([[0, 0, image_size, image_size]] * count, dtype=torch.int64)
        starts = torch.arange(0, image_size + 1, self.patch_size)
        for row in range(count):
            if torch.rand(()) < self.crop_p:
                top, left = starts[torch.randint(len(starts), (2,))].clamp(max=image_size - self.crop_size).tolist()
                boxes[row] = torch.tensor([top, left, self.crop_size, self.crop_size])
        return boxes


__all__ = [
    "FLIP_OPERATIONS",
    "EquivarianceViewConfig",
    "apply_flips",
    "crop_and_resize",
    "draw_flips",
    "make_mosaics",
    "revert_flips",
    "split_mosaics",
]
