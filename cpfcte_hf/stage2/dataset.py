# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's training data: the pseudo-label folder of a labelling run (`resolve_pseudo_label_dir`), the dataset of
(image, pseudo-label mask) pairs over a split (`PseudoLabelDataset`), and kazuto1011's augmentation (random scale,
crop and flip).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize_mask
from ..models.cpfcte.image_processing_cpfcte import resize_and_normalize, to_rgb_array
from ..models.cpfcte.metrics import IGNORE_INDEX
from ..models.cpfcte.visualization import read_mask
from ..models.deeplab_v2.processing import IMAGENET_MEAN, IMAGENET_STD
from ..prediction.job import safe_file_id
from ..prediction.outputs import OutputLayout


logger = logging.getLogger(__name__)


def random_scale_crop_flip(
    image: np.ndarray,
    mask: np.ndarray,
    crop_size: int = 321,
    scale_range: tuple[float, float] = (0.5, 1.5),
    flip_prob: float = 0.5,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
    vflip_prob: float = 0.0,
    transpose_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    DeepLab's training augmentation of one image and its mask.

    1. rescale both by a factor drawn uniformly from `scale_range` (image bilinear through `resize_and_normalize`,
       which also normalises it; mask nearest);
    2. pad to at least `crop_size` on each side, bottom and right (the image with zeros, i.e. the mean colour after
       normalisation; the mask with `ignore_index`);
    3. take a random `crop_size` x `crop_size` crop;
    4. flip left-right with probability `flip_prob`;
    5. flip top-bottom with probability `vflip_prob` and swap height and width (transpose) with probability
       `transpose_prob`: both 0 in DeepLab's recipe; turned on they make the flips and 90-degree turns of the square
       crop (the dihedral group), for images whose classes do not depend on orientation (the shapes demo), a
       departure from the paper. At 0 they draw no random number (the recipe's crops stay exactly the same).

    Random numbers come from torch (`generator`, else the global generator), which `DataLoader` seeds per worker.

    Args:
        image: `(H, W, 3)` uint8 RGB. mask: `(H, W)` class ids, same size.

    Returns:
        `pixel_values` `(3, crop_size, crop_size)` float32 and `labels` `(crop_size, crop_size)` int64.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"Image {image.shape[:2]} and mask {mask.shape} sizes differ.")
    low, high = float(scale_range[0]), float(scale_range[1])
    scale = low + (high - low) * torch.rand((), generator=generator).item()
    height, width = mask.shape
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixel_values = resize_and_normalize(image, size, image_mean, image_std)[0]
    labels = torch.from_numpy(resize_mask(mask, size).astype(np.int64))

    pad_height, pad_width = max(0, crop_size - size[0]), max(0, crop_size - size[1])
    if pad_height or pad_width:
        pixel_values = F.pad(pixel_values, (0, pad_width, 0, pad_height), value=0.0)
        labels = F.pad(labels, (0, pad_width, 0, pad_height), value=ignore_index)
    top = int(torch.randint(0, labels.shape[0] - crop_size + 1, (), generator=generator))
    left = int(torch.randint(0, labels.shape[1] - crop_size + 1, (), generator=generator))
    pixel_values = pixel_values[:, top : top + crop_size, left : left + crop_size]
    labels = labels[top : top + crop_size, left : left + crop_size]
    if torch.rand((), generator=generator).item() < flip_prob:
        pixel_values, labels = pixel_values.flip(-1), labels.flip(-1)
    if vflip_prob > 0 and torch.rand((), generator=generator).item() < vflip_prob:
        pixel_values, labels = pixel_values.flip(-2), labels.flip(-2)
    if transpose_prob > 0 and torch.rand((), generator=generator).item() < transpose_prob:
        pixel_values, labels = pixel_values.transpose(-1, -2), labels.transpose(-1, -2)
    return pixel_values.contiguous(), labels.contiguous()


def resolve_pseudo_label_dir(path: str | os.PathLike, pseudo_label_set: str = "crf") -> Path:
    """
    The folder of `<id>.png` masks to train on: `path/<pseudo_label_set>` when `path` is an output directory of
    `scripts/pseudo_label.py` (it has `crf/` and `bpm/`), else `path` itself.

    Raises:
        NotADirectoryError / FileNotFoundError naming the path when there is no such folder or no PNG in it.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"Pseudo-label directory {str(root)!r} does not exist or is not a directory.")
    layout = OutputLayout(root)
    subfolders = {"crf": layout.crf_dir, "bpm": layout.bpm_dir}
    if pseudo_label_set not in subfolders:
        raise ValueError(f"`pseudo_label_set` must be 'crf' or 'bpm', got {pseudo_label_set!r}.")
    if any(folder.is_dir() for folder in subfolders.values()):
        folder = subfolders[pseudo_label_set]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{str(root)!r} is a pseudo-label output directory without {pseudo_label_set}/ "
                f"(was scripts/pseudo_label.py run{' without --crf' if pseudo_label_set == 'crf' else ''}?)."
            )
        root = folder
    if not any(root.glob("*.png")):
        raise FileNotFoundError(f"No <id>.png masks in {str(root)!r}.")
    return root


class PseudoLabelDataset(torch.utils.data.Dataset):
    """
    Training pairs for stage 2: the images of a `datasets.Dataset` (columns `image`, `id`) and the masks
    `<mask_dir>/<id>.png`, augmented by `random_scale_crop_flip`. Images without a mask (e.g. failed in
    pseudo-labelling) are left out with a warning; none at all is an error.

    Items are `{"pixel_values": (3, crop, crop) float32, "labels": (crop, crop) int64}`.
    """

    def __init__(
        self,
        dataset,
        mask_dir: str | os.PathLike,
        num_labels: int,
        crop_size: int = 321,
        scale_range: tuple[float, float] = (0.5, 1.5),
        flip_prob: float = 0.5,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
        vflip_prob: float = 0.0,
        transpose_prob: float = 0.0,
    ):
        for column in ("image", "id"):
            if column not in dataset.column_names:
                raise ValueError(f"The training dataset needs an {column!r} column; it has {dataset.column_names}.")
        probabilities_ok = all(0.0 <= p <= 1.0 for p in (flip_prob, vflip_prob, transpose_prob))
        if crop_size < 1 or not 0 < scale_range[0] <= scale_range[1] or not probabilities_ok:
            raise ValueError(
                f"Bad augmentation: crop_size={crop_size}, scale_range={scale_range}, flip_prob={flip_prob}, "
                f"vflip_prob={vflip_prob}, transpose_prob={transpose_prob}."
            )
        self.mask_dir = Path(mask_dir)
        ids = [str(i) for i in dataset["id"]]
        keep, missing = [], []
        for index, image_id in enumerate(ids):
            (keep if (self.mask_dir / f"{safe_file_id(image_id)}.png").is_file() else missing).append(index)
        if not keep:
            raise FileNotFoundError(
                f"None of the {len(ids)} images (e.g. {ids[:3]}) has a pseudo-label <id>.png in "
                f"{str(self.mask_dir)!r}:"
                " wrong directory or wrong split?"
            )
        if missing:
            logger.warning(
                f"{len(missing)} of {len(ids)} images have no pseudo-label in {self.mask_dir} and are left out "
                f"(e.g. {[ids[i] for i in missing[:5]]})."
            )
        self.images = dataset.select_columns(["image", "id"]).select(keep)
        self.num_labels = int(num_labels)
        self.crop_size = int(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_prob = float(flip_prob)
        self.vflip_prob = float(vflip_prob)
        self.transpose_prob = float(transpose_prob)
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.ignore_index = int(ignore_index)

    def __len__(self) -> int:
        return len(self.images)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """`(H, W, 3)` uint8 image, `(H, W)` uint8 mask and the id of item `index`, before augmentation."""
        row = self.images[index]
        image_id = str(row["id"])
        path = self.mask_dir / f"{image_id}.png"
        image = to_rgb_array(row["image"])
        mask = read_mask(path)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{path}: mask is {mask.shape[::-1]} (w x h) but image {image_id!r} is {image.shape[1::-1]}."
            )
        bad = (mask >= self.num_labels) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"{path}: values {np.unique(mask[bad]).tolist()[:10]} are neither class ids 0..{self.num_labels - 1} "
                f"nor {self.ignore_index} (ignore)."
            )
        return image, mask, image_id

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask, _ = self.read_pair(index)
        pixel_values, labels = random_scale_crop_flip(
            image,
            mask,
            self.crop_size,
            self.scale_range,
            self.flip_prob,
            self.image_mean,
            self.image_std,
            self.ignore_index,
            vflip_prob=self.vflip_prob,
            transpose_prob=self.transpose_prob,
        )
        return {"pixel_values": pixel_values, "labels": labels}
