# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training and evaluation transforms (applied lazily with `ds.with_transform`); the batch collator lives in
`collator`, the augmentation in `augmentation`, the equivariance views' geometry in `views` (all importable here).

Pipeline of `TrainTransform` (ViT-PCM, docs/method.md section 2), on a batch of rows of any loader of this package:

    decode -> to_rgb_array -> resize_and_normalize(mean=0, std=1)    # the package's one resize, to [0, 1]
           -> colour jitter -> grayscale -> flip LR -> flip UD -> transpose
           -> round to uint8 -> resize_and_normalize(mean, std)      # the package's one normalisation

With `AugmentationConfig.clip` (ours, the default) every colour step is clamped to [0, 1] and the result rounded to
8-bit levels; ViT-PCM (`utils.py` `color_transform`) works on unclipped floats on a 0..255 scale and normalises them
as they are, which `clip=False` does (no clamp after a step, no rounding).

so resizing and normalisation stay in `cpfcte_hf.models.cpfcte.image_processing_cpfcte.resize_and_normalize`, as in the image
processor, the pipeline and pseudo-labelling. Like ViT-PCM, the augmentation runs after the resize to the training
resolution, on the whole batch at once (see `augmentation` for the colour jitter's semantics and the random draws).

Output of both transforms, per row: `pixel_values` (3, H, W) float32, `labels` (C,) float32 multi-hot with the
background (index 0) always set, `id` (str), and `masks` (H, W) int64 (class ids, 255 = ignore) when asked for and
the dataset has masks: resized with NEAREST to the same H, W; a row without a mask gets an all-255 mask.
`WeakSegmentationCollator` stacks rows into a batch and leaves `id` out unless `return_ids=True`.

Where the augmentation runs: the steps from the colour jitter to the normalisation are `BatchAugmentation`, which
works on a batch on any device. `TrainTransform` runs it in the loader (on the CPU); with `augment_in_loader=False`
the loader workers only decode and resize, hand over `uint8` images (which the collator keeps as `uint8`), and the
trainer runs `BatchAugmentation` on the GPU after the transfer (`CPFCTETrainingArguments.augmentation_device`).
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..models.cpfcte.image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD, resize_and_normalize, to_rgb_array
from ._common import IGNORE_INDEX
from .augmentation import (
    AugmentationConfig,
    BatchAugmentation,
    SegmentationAugmentation,
    process_rank,
    rank_generator,
)
from .collator import EQUIVARIANCE_KEYS, EquivarianceCollator, WeakSegmentationCollator, labels_to_multi_hot
from .views import (
    EquivarianceViewConfig,
    apply_flips,
    crop_and_resize,
    draw_flips,
    make_mosaics,
    revert_flips,
    split_mosaics,
)


DEFAULT_SIZE = (384, 384)


def resize_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A mask (PIL image of class ids, or array) -> `(H, W)` uint8 resized with NEAREST to `size = (H, W)`."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"A mask must have one channel, got shape {array.shape}.")
    array = array.astype(np.uint8)
    if array.shape != tuple(size):
        array = np.asarray(Image.fromarray(array, mode="L").resize((size[1], size[0]), resample=Image.NEAREST))
    return array


def _resolve_size(size, image_processor) -> tuple[int, int]:
    if size is None and image_processor is not None:
        processor_size = image_processor.size
        size = (processor_size["height"], processor_size["width"])
    if size is None:
        return DEFAULT_SIZE
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, dict):
        return (int(size["height"]), int(size["width"]))
    height, width = size
    return (int(height), int(width))


class _SegmentationTransform:
    def __init__(
        self,
        num_labels: int,
        image_processor=None,
        *,
        size=None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        resample=None,
        with_masks: bool = False,
    ):
        if num_labels < 2:
            raise ValueError(f"num_labels counts the background too and must be at least 2, got {num_labels}.")
        self.num_labels = int(num_labels)
        self.size = _resolve_size(size, image_processor)
        processor_mean = getattr(image_processor, "image_mean", None) if image_processor is not None else None
        processor_std = getattr(image_processor, "image_std", None) if image_processor is not None else None
        self.image_mean = tuple(image_mean or processor_mean or VIT_PCM_MEAN)
        self.image_std = tuple(image_std or processor_std or VIT_PCM_STD)
        if resample is None and image_processor is not None:
            resample = getattr(image_processor, "resample", None)
        self.resample = Image.BILINEAR if resample is None else resample
        self.with_masks = with_masks

    @classmethod
    def for_dataset(cls, dataset, image_processor=None, **kwargs):
        """Builds the transform with `num_labels` read from `dataset.features["labels"]`."""
        features = dataset.features if hasattr(dataset, "features") else next(iter(dataset.values())).features
        return cls(features["labels"].feature.num_classes, image_processor, **kwargs)

    def _rgb(self, batch) -> list[np.ndarray]:
        return [to_rgb_array(image) for image in batch["image"]]

    def _masks(self, batch) -> torch.Tensor | None:
        if not self.with_masks or "mask" not in batch:
            return None
        masks = [
            np.full(self.size, IGNORE_INDEX, np.uint8) if mask is None else resize_mask(mask, self.size)
            for mask in batch["mask"]
        ]
        return torch.from_numpy(np.stack(masks)).long()

    def _output(self, batch, pixel_values, masks) -> dict:
        output = {
            "pixel_values": pixel_values,
            "labels": labels_to_multi_hot(batch["labels"], self.num_labels),
        }
        if "id" in batch:
            output["id"] = list(batch["id"])
        if masks is not None:
            output["masks"] = masks
        return output


class EvalTransform(_SegmentationTransform):
    """Resize + normalise (no augmentation); with `with_masks=True` (default) also the NEAREST-resized masks.

    Use as `ds.with_transform(EvalTransform(num_labels, image_processor))` or `EvalTransform.for_dataset(ds, ...)`.
    """

    def __init__(self, num_labels: int, image_processor=None, *, with_masks: bool = True, **kwargs):
        super().__init__(num_labels, image_processor, with_masks=with_masks, **kwargs)

    def __call__(self, batch: dict) -> dict:
        pixel_values = resize_and_normalize(
            self._rgb(batch), self.size, self.image_mean, self.image_std, self.resample
        )
        return self._output(batch, pixel_values, self._masks(batch))


class TrainTransform(_SegmentationTransform):
    """Resize + ViT-PCM augmentation + normalise. Masks (off by default) get the same flips and transposes.

    Args:
        num_labels: C, background included (`ds.features["labels"].feature.num_classes`).
        image_processor: a `CPFCTEImageProcessor` whose `size`, `image_mean`, `image_std`, `resample` are used.
        size: `(height, width)`, an int, or `{"height", "width"}`; overrides the processor's (default 384x384).
        augmentation: an `AugmentationConfig`; None for the defaults.
        with_masks: also return `masks`, augmented like the images.
        augment_in_loader: `False` stops after decode + resize: `pixel_values` are then the resized `uint8` images
            `(3, H, W)` (masks not augmented), for `self.batch_augmentation` to finish on the training device.
        rank: the process index under a multi-process launch (default: the `RANK` environment variable): each rank
            draws its own augmentations (`rank_generator`); rank 0 draws as a single process.
    """

    def __init__(
        self,
        num_labels: int,
        image_processor=None,
        *,
        augmentation: AugmentationConfig | None = None,
        with_masks: bool = False,
        augment_in_loader: bool = True,
        rank: int | None = None,
        **kwargs,
    ):
        super().__init__(num_labels, image_processor, with_masks=with_masks, **kwargs)
        self.batch_augmentation = BatchAugmentation(augmentation, self.image_mean, self.image_std, rank=rank)
        self.augmentation = self.batch_augmentation.augmentation
        self.augment_in_loader = augment_in_loader
        if self.augmentation.config.transpose_p > 0 and self.size[0] != self.size[1]:
            raise ValueError(f"transpose_p > 0 needs a square training size, got {self.size}.")

    def __call__(self, batch: dict) -> dict:
        unit = resize_and_normalize(self._rgb(batch), self.size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), self.resample)
        # `unit` holds the resized 8-bit levels divided by 255: rounding gives them back exactly.
        images = (unit * 255.0).round_().to(torch.uint8)
        masks = self._masks(batch)
        if self.augment_in_loader:
            pixel_values, masks = self.batch_augmentation(images, masks)
        else:
            pixel_values = images
        return self._output(batch, pixel_values, masks)


class EquivarianceTrainTransform(TrainTransform):
    """
    `TrainTransform` plus ViT-PCM's second view for L_ET. Per row, besides `pixel_values` (the full view: colour
    jitter, then flips drawn here) and `labels`:

        view_flips      (3,) float32   the full view's left-right / up-down / transpose flags
        et_pixel_values (3, S, S)      the second view: own colour jitter, crop-or-downscale, own flips
        et_flips        (3,) float32   its flags
        et_box          (4,) int64     its crop `(top, left, height, width)` in patches of the full view's grid

    `S` is `views.scale_size`. The augmentation's flip probabilities apply to both views.
    """

    def __init__(
        self, num_labels: int, image_processor=None, *, views: EquivarianceViewConfig | None = None, **kwargs
    ):
        super().__init__(num_labels, image_processor, **kwargs)
        self.views = views or EquivarianceViewConfig()
        if self.size[0] != self.size[1]:
            raise ValueError(f"The equivariance views need a square training size, got {self.size}.")
        self.views.check_training_size(self.size[0])
        flips = self.augmentation.config
        self.flip_probabilities = (flips.hflip_p, flips.vflip_p, flips.transpose_p)
        self.colour = SegmentationAugmentation(
            dataclasses.replace(self.augmentation.config, hflip_p=0.0, vflip_p=0.0, transpose_p=0.0)
        )

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        as_uint8 = (images * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return resize_and_normalize(list(as_uint8), tuple(images.shape[-2:]), self.image_mean, self.image_std)

    def __call__(self, batch: dict) -> dict:
        unit = resize_and_normalize(self._rgb(batch), self.size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), self.resample)
        count, patch = unit.shape[0], self.views.patch_size
        full, masks = self.colour(unit, self._masks(batch))
        view_flips = draw_flips(count, *self.flip_probabilities)
        full = apply_flips(full, view_flips)
        if masks is not None:
            masks = apply_flips(masks, view_flips)
        second, _ = self.colour(unit)
        boxes = self.views.draw_boxes(count, self.size[0])
        scale = (self.views.scale_size, self.views.scale_size)
        et_flips = draw_flips(count, *self.flip_probabilities)
        second = apply_flips(crop_and_resize(second, boxes, scale).clamp(0, 1), et_flips)
        output = self._output(batch, self._normalize(full), masks)
        output.update(
            view_flips=view_flips.float(),
            et_pixel_values=self._normalize(second),
            et_flips=et_flips.float(),
            et_box=boxes // patch,
        )
        return output


__all__ = [
    "EQUIVARIANCE_KEYS",
    "AugmentationConfig",
    "BatchAugmentation",
    "EquivarianceCollator",
    "EquivarianceTrainTransform",
    "EquivarianceViewConfig",
    "apply_flips",
    "crop_and_resize",
    "draw_flips",
    "make_mosaics",
    "revert_flips",
    "split_mosaics",
    "EvalTransform",
    "SegmentationAugmentation",
    "TrainTransform",
    "WeakSegmentationCollator",
    "labels_to_multi_hot",
    "process_rank",
    "rank_generator",
    "resize_mask",
]
