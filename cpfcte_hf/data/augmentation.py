# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""ViT-PCM's training augmentation on a batch (docs/method.md section 2): `AugmentationConfig`,
`SegmentationAugmentation` (colour jitter, grayscale, flips, transpose) and `BatchAugmentation` (that, with the
8-bit rounding and the normalisation, on any device). `transforms.TrainTransform` runs them in the loader.

Colour jitter uses `kornia.enhance` with ViT-PCM's fixed order and its TensorFlow semantics where kornia has
them: brightness adds a delta in [-0.2, 0.2] (on images in [0, 1]), saturation scales the HSV saturation by
[0.5, 1.5], hue shifts by [-0.1, 0.1] of the hue circle; contrast blends with the grey mean by a factor in
[0.5, 2] (torchvision's formula; TensorFlow uses the per-channel mean). Flips and the transpose are exact tensor
ops (`views.FLIP_OPERATIONS`; kornia has no transpose), drawn once per image and applied to the image and its mask
alike.

Random draws: torch's global generator (seeded by the trainer's `seed`; `torch.utils.data.DataLoader` seeds each
worker apart). Under a multi-process launch every rank is seeded alike, so each rank mixes its index into its draws
(`rank=`, default the `RANK` environment variable; `rank_generator`): ranks augment differently, each reproducibly,
and rank 0 draws exactly as a single process.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.cpfcte.image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD
from .views import FLIP_OPERATIONS


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

    @property
    def colour_jitter_is_identity(self) -> bool:
        """True when every colour factor range is a single neutral value (the shapes presets: flips only)."""
        return self.brightness == 0 and self.hue == 0 and self.contrast == (1, 1) and self.saturation == (1, 1)


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
        # Neutral factors change no pixel (no more than float rounding, which the 8-bit rounding of `clip` removes):
        # the draws above are still made, so the flips below draw as before, but the HSV round trip, the costliest
        # step of the pipeline, is skipped: a stage-1 epoch of the demo in 0.92x the time, the weights equal to the
        # bit (README, "What the demo measures").
        if jitter.any() and not config.colour_jitter_is_identity:
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
        steps = zip((config.hflip_p, config.vflip_p, config.transpose_p), FLIP_OPERATIONS)
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


__all__ = ["AugmentationConfig", "BatchAugmentation", "SegmentationAugmentation", "process_rank", "rank_generator"]
