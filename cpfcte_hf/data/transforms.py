# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training and evaluation transforms (applied lazily with `ds.with_transform`) and the batch collator.

Pipeline of `TrainTransform` (ViT-PCM, docs/method.md section 2), on a batch of rows of any loader of this package:

    decode -> to_rgb_array -> resize_and_normalize(mean=0, std=1)    # the package's one resize, to [0, 1]
           -> colour jitter -> grayscale -> flip LR -> flip UD -> transpose
           -> round to uint8 -> resize_and_normalize(mean, std)      # the package's one normalisation

With `AugmentationConfig.clip` (ours, the default) every colour step is clamped to [0, 1] and the result rounded to
8-bit levels; ViT-PCM (`utils.py` `color_transform`) works on unclipped floats on a 0..255 scale and normalises them
as they are, which `clip=False` does (no clamp after a step, no rounding).

so resizing and normalisation stay in `cpfcte_hf.models.cpfcte.image_processing_cpfcte.resize_and_normalize`, as in the image
processor, the pipeline and pseudo-labelling. Like ViT-PCM, the augmentation runs after the resize to the training
resolution, on the whole batch at once.

Colour jitter uses `kornia.enhance` with ViT-PCM's fixed order and its TensorFlow semantics where kornia has
them: brightness adds a delta in [-0.2, 0.2] (on images in [0, 1]), saturation scales the HSV saturation by
[0.5, 1.5], hue shifts by [-0.1, 0.1] of the hue circle; contrast blends with the grey mean by a factor in
[0.5, 2] (torchvision's formula; TensorFlow uses the per-channel mean). Flips and the transpose are exact tensor
ops written here (kornia has no transpose), drawn once per image and applied to the image and its mask alike.

Output of both transforms, per row: `pixel_values` (3, H, W) float32, `labels` (C,) float32 multi-hot with the
background (index 0) always set, `id` (str), and `masks` (H, W) int64 (class ids, 255 = ignore) when asked for and
the dataset has masks: resized with NEAREST to the same H, W; a row without a mask gets an all-255 mask.
`WeakSegmentationCollator` stacks rows into a batch and leaves `id` out unless `return_ids=True`.

Where the augmentation runs: the steps from the colour jitter to the normalisation are `BatchAugmentation`, which
works on a batch on any device. `TrainTransform` runs it in the loader (on the CPU); with `augment_in_loader=False`
the loader workers only decode and resize, hand over `uint8` images (which the collator keeps as `uint8`), and the
trainer runs `BatchAugmentation` on the GPU after the transfer (`CPFCTETrainingArguments.augmentation_device`).

Random draws: torch's global generator (seeded by the trainer's `seed`; `torch.utils.data.DataLoader` seeds each
worker apart). Under a multi-process launch every rank is seeded alike, so each rank mixes its index into its draws
(`rank=`, default the `RANK` environment variable; `rank_generator`): ranks augment differently, each reproducibly,
and rank 0 draws exactly as a single process.
"""

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.cpfcte.image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD, resize_and_normalize, to_rgb_array
from ..models.cpfcte.inference import multi_hot
from ._common import IGNORE_INDEX


DEFAULT_SIZE = (384, 384)


@dataclass
class AugmentationConfig:
    """ViT-PCM's training augmentation (docs/method.md section 2). Set a probability to 0 to switch a step off.

    Attributes:
        brightness: additive delta drawn from [-brightness, brightness] (images in [0, 1]).
        contrast: contrast factor range (1 = unchanged).
        saturation: saturation factor range (1 = unchanged).
        hue: hue shift drawn from [-hue, hue], in turns of the hue circle (at most 0.5).
        colour_jitter_p: probability that an image gets the colour jitter (ViT-PCM: always).
        grayscale_p: probability of converting to grey (3 equal channels).
        hflip_p, vflip_p: probabilities of a left-right and an up-down flip.
        transpose_p: probability of swapping height and width (needs a square training size).
        clip: clamp to [0, 1] after every colour step and round the result to 8-bit levels (ours); False keeps
            unclipped floats throughout, as ViT-PCM's colour jitter on 0..255 floats (the L_ET second views, which
            go through an 8-bit resize, stay clipped).
    """

    brightness: float = 0.2
    contrast: tuple[float, float] = (0.5, 2.0)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: float = 0.1
    colour_jitter_p: float = 1.0
    grayscale_p: float = 0.1
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    transpose_p: float = 0.5
    clip: bool = True

    def __post_init__(self):
        self.contrast = tuple(self.contrast)
        self.saturation = tuple(self.saturation)
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}.")
        if self.brightness < 0 or min(self.contrast) < 0 or min(self.saturation) < 0:
            raise ValueError("brightness, contrast and saturation must be non-negative.")
        for name in ("colour_jitter_p", "grayscale_p", "hflip_p", "vflip_p", "transpose_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}.")


def _uniform(low: float, high: float, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def process_rank(rank: int | None = None) -> int:
    """`rank`, else the `RANK` that `torchrun` and `accelerate launch` set in every process of a run (0 if unset)."""
    if rank is not None:
        return int(rank)
    value = os.environ.get("RANK", "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"The environment variable RANK must be a process index, got {value!r}.") from None


def rank_generator(rank: int) -> torch.Generator | None:
    """The random stream of one augmentation call on process `rank`.

    Rank 0 (and a single process) draws from torch's global generator, as always. Another rank draws from a generator
    seeded by one draw of the global generator mixed with its rank: every process of a run seeds torch alike (the
    trainer's `seed`, and the same per-worker seeds in the loader workers), so without the rank all of them would
    draw the same flips and jitters. The stream stays reproducible from the seed, and differs from call to call,
    from worker to worker (torch seeds each loader worker apart) and from rank to rank.
    """
    if rank == 0:
        return None
    draw = int(torch.randint(0, 2**62, (1,)).item())
    seed = int(np.random.SeedSequence([draw, int(rank)]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class SegmentationAugmentation:
    """Applies `AugmentationConfig` to a batch: `(images (B,3,H,W) in [0,1], masks (B,H,W) | None)` -> same.

    Random draws use torch's global generator, which `torch.utils.data.DataLoader` seeds differently in every
    worker; call `torch.manual_seed` for a reproducible sequence in the main process. Under a multi-process launch,
    `rank` (default: the `RANK` environment variable) gives each process its own stream (`rank_generator`); rank 0
    draws as a single process does.
    """

    def __init__(self, config: AugmentationConfig | None = None, rank: int | None = None):
        self.config = config or AugmentationConfig()
        self.rank = rank

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        # kornia is needed only where the augmentation runs: loader workers that only decode and resize (augmentation
        # on the training device) do without it.
        from kornia.color import hsv_to_rgb, rgb_to_grayscale, rgb_to_hsv
        from kornia.enhance import (
            adjust_brightness,
            adjust_contrast_with_mean_subtraction,
            adjust_hue_raw,
            adjust_saturation_raw,
        )

        config = self.config
        count = images.shape[0]
        device = images.device
        images = images.clamp(0, 1)

        def clip(values):
            return values.clamp(0, 1) if config.clip else values

        # Every random draw is made on the CPU, with torch's global generator (or this rank's, `rank_generator`),
        # and only its result moves to the images' device: the same seed gives the same augmentation on the CPU and
        # on a GPU, and deciding whether a step runs at all never waits for the GPU.
        generator = rank_generator(process_rank(self.rank))
        jitter = torch.rand(count, generator=generator) < config.colour_jitter_p
        if jitter.any():
            brightness = torch.where(jitter, _uniform(-config.brightness, config.brightness, count, generator), 0.0)
            contrast = torch.where(jitter, _uniform(*config.contrast, count, generator), 1.0)
            saturation = torch.where(jitter, _uniform(*config.saturation, count, generator), 1.0)
            hue = torch.where(jitter, _uniform(-config.hue, config.hue, count, generator), 0.0)
            images = adjust_brightness(images, brightness.to(device), clip_output=config.clip)
            if config.clip:
                images = adjust_contrast_with_mean_subtraction(images, contrast.to(device)).clamp(0, 1)
            else:  # kornia's formula without its clamp: blend with the grey mean
                factor = contrast.to(device).view(-1, 1, 1, 1)
                images = images * factor + rgb_to_grayscale(images).mean((-2, -1), True) * (1 - factor)
            # Saturation then hue, as kornia's adjust_saturation and adjust_hue, in one HSV round trip instead of
            # two (the same result up to float rounding, and the costliest step of the pipeline).
            hsv = adjust_saturation_raw(rgb_to_hsv(images), saturation.to(device))
            images = clip(hsv_to_rgb(adjust_hue_raw(hsv, (hue * 2 * torch.pi).to(device))))
        grey = torch.rand(count, generator=generator) < config.grayscale_p
        if grey.any():
            grey = grey.to(device)[:, None, None, None]
            images = torch.where(grey, rgb_to_grayscale(images).expand_as(images), images)
        images, masks = self._geometric(images, masks, generator)
        return images.contiguous(), None if masks is None else masks.contiguous()

    def _geometric(self, images, masks, generator=None):
        config = self.config
        count = images.shape[0]
        steps = (
            (config.hflip_p, lambda x: x.flip(-1)),
            (config.vflip_p, lambda x: x.flip(-2)),
            (config.transpose_p, lambda x: x.transpose(-1, -2)),
        )
        for step, (probability, operation) in enumerate(steps):
            chosen = torch.rand(count, generator=generator) < probability
            if not chosen.any():
                continue
            if step == 2 and images.shape[-1] != images.shape[-2]:
                raise ValueError(f"transpose needs square images, got {tuple(images.shape[-2:])}; set transpose_p=0.")
            chosen = chosen.to(images.device)
            images = torch.where(chosen[:, None, None, None], operation(images), images)
            if masks is not None:
                masks = torch.where(chosen.to(masks.device)[:, None, None], operation(masks), masks)
        return images, masks


class BatchAugmentation:
    """
    The batch half of `TrainTransform`: resized `uint8` images -> augmented, normalised `pixel_values`.

    `(images (B, 3, H, W) uint8, masks (B, H, W) | None)` on any device -> `(pixel_values (B, 3, H, W) float32,
    masks)` on the same device: scale to [0, 1], `SegmentationAugmentation`, round to 8-bit levels (ours; ViT-PCM keeps
    its unclipped floats: `AugmentationConfig.clip=False` skips the rounding), then `(x - mean) / std`, the arithmetic
    of `resize_and_normalize`. `TrainTransform`
    calls it in the loader; with `augment_in_loader=False` the loader stops before it and the trainer calls it on the
    training device after the transfer (`CPFCTETrainingArguments.augmentation_device`).
    """

    def __init__(
        self,
        augmentation: AugmentationConfig | None = None,
        image_mean: Sequence[float] = VIT_PCM_MEAN,
        image_std: Sequence[float] = VIT_PCM_STD,
        rank: int | None = None,
    ):
        self.augmentation = SegmentationAugmentation(augmentation, rank=rank)
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"BatchAugmentation takes (B, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}."
            )
        augmented, masks = self.augmentation(images.float() / 255.0, masks)
        levels = augmented * 255.0
        if self.augmentation.config.clip:
            levels = levels.round_().clamp_(0, 255)
        mean = torch.tensor(self.image_mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.image_std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1) * 255.0
        return ((levels - mean) / std).contiguous(), masks


def labels_to_multi_hot(labels: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """Lists of class ids -> `(B, num_labels)` float32 multi-hot (rows of `inference.multi_hot`); background (0) is
    always set."""
    if not labels:
        return torch.zeros(0, num_labels, dtype=torch.float32)
    return torch.stack([multi_hot({0, *(int(i) for i in ids)}, num_labels) for ids in labels])


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


# --- ViT-PCM's equivariance views (L_ET) --------------------------------------------------------------------------
#
# ViT-PCM (`dataloader.py` `_preprocess_image`, `utils.py` `affine_transform`) gives every training image two views:
# the full view (colour jitter, flips, transpose) that the BCE trains on, and a second view with its own colour
# jitter, a crop or a downscale, and its own flips. Four second views are tiled into one mosaic at the training size;
# the model's patch probabilities on the mosaic are trained towards the full view's (see `stage1/equivariance.py`
# `equivariance_loss`). The geometry below is shared by the images and the patch probabilities.


def draw_flips(count: int, hflip_p: float, vflip_p: float, transpose_p: float) -> torch.Tensor:
    """`(count, 3)` bool: a left-right flip, an up-down flip and a transpose, each drawn independently."""
    probabilities = torch.tensor([hflip_p, vflip_p, transpose_p])
    return torch.rand(count, 3) < probabilities


def apply_flips(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flips `(B, ..., H, W)` per item by `flips` `(B, 3)`: left-right, up-down, then transpose (ViT-PCM's order)."""
    x = x.clone()
    for step, operation in enumerate((lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.transpose(-1, -2))):
        chosen = flips[:, step].to(torch.bool).to(x.device)
        if chosen.any():
            x[chosen] = operation(x[chosen])
    return x


def revert_flips(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The inverse of `apply_flips`: transpose, then up-down, then left-right (each undoes itself)."""
    x = x.clone()
    for step, operation in ((2, lambda t: t.transpose(-1, -2)), (1, lambda t: t.flip(-2)), (0, lambda t: t.flip(-1))):
        chosen = flips[:, step].to(torch.bool).to(x.device)
        if chosen.any():
            x[chosen] = operation(x[chosen])
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


EQUIVARIANCE_KEYS = ("view_flips", "et_pixel_values", "et_flips", "et_box")


class EquivarianceCollator:
    """`WeakSegmentationCollator` that also stacks the L_ET views of `EquivarianceTrainTransform`."""

    def __init__(self, num_labels: int | None = None, **kwargs):
        self.collator = WeakSegmentationCollator(num_labels, **kwargs)

    def __call__(self, examples: Sequence[dict]) -> dict:
        batch = self.collator(examples)
        for key in EQUIVARIANCE_KEYS:
            if all(key in example for example in examples):
                batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
        return batch


class WeakSegmentationCollator:
    """Stacks transformed rows into a model batch.

    Returns `{"pixel_values": (B,3,H,W) float32, "labels": (B,C) float32}` plus `"masks": (B,H,W) int64` when the
    rows carry masks (eval transform) and `"ids": list[str]` when `return_ids=True`. Rows whose `labels` are still
    lists of class ids are turned into multi-hot vectors (then `num_labels` is required).

    The model's `forward` takes only `pixel_values` and `labels`: a trainer must pop `masks` and `ids` first.
    """

    def __init__(self, num_labels: int | None = None, return_ids: bool = False, return_masks: bool = True):
        self.num_labels = num_labels
        self.return_ids = return_ids
        self.return_masks = return_masks

    def __call__(self, examples: Sequence[dict]) -> dict:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        if "pixel_values" not in examples[0]:
            raise KeyError(
                "Examples have no 'pixel_values': apply TrainTransform or EvalTransform first, e.g. "
                "`ds.with_transform(TrainTransform.for_dataset(ds, image_processor))`."
            )
        pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
        # uint8 rows are resized images whose augmentation runs after the transfer (TrainTransform with
        # augment_in_loader=False): they stay uint8, a quarter of the bytes to copy.
        batch = {"pixel_values": pixel_values if pixel_values.dtype == torch.uint8 else pixel_values.float()}
        labels = [e["labels"] for e in examples]
        if isinstance(labels[0], torch.Tensor) and labels[0].dtype.is_floating_point:
            batch["labels"] = torch.stack(labels).float()
        else:
            if self.num_labels is None:
                raise ValueError("Rows carry label ids, not multi-hot vectors: pass num_labels to the collator.")
            batch["labels"] = labels_to_multi_hot(labels, self.num_labels)
        if self.return_masks and all("masks" in e for e in examples):
            batch["masks"] = torch.stack([torch.as_tensor(e["masks"]) for e in examples]).long()
        if self.return_ids:
            batch["ids"] = [e.get("id") for e in examples]
        return batch


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
    "resize_mask",
]
