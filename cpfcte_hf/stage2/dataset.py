# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's training data, built as stage 1's is: a `datasets.Dataset` of records, augmented lazily.

    pairs = pseudo_label_dataset(train_split, mask_dir, num_labels)        # rows: image, label (mask file), id
    train = pairs.with_transform(PseudoLabelTransform(crop_size=321))     # rows: pixel_values, labels

`pseudo_label_dataset` pairs the images of a split with the masks `<mask_dir>/<id>.png` of a labelling run
(`resolve_pseudo_label_dir`; images rejected in its review are left out first, `leave_out_rejected`), checks every
mask once, at build time, and keeps the pairs in an Arrow cache whose key holds the size and modification time of
every mask and image file (`cpfcte_hf.data._common.files_fingerprint`): a rewritten pseudo-label builds a new cache.
`PseudoLabelTransform` is kazuto1011's augmentation (`random_scale_crop_flip`: random scale, crop and flip) as a
`with_transform` callable. `PseudoLabelDataset` is the 0.1.0 torch `Dataset` with the same items, over the two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data._common import ERROR_COLUMN, attach_loader_report, files_fingerprint, loader_report
from ..data._validation import _open_source, describe_source, displayed_size
from ..data.transforms import resize_mask
from ..models.cpfcte.image_processing_cpfcte import resize_and_normalize, to_rgb_array
from ..models.cpfcte.metrics import IGNORE_INDEX
from ..models.cpfcte.visualization import read_mask
from ..models.deeplab_v2.processing import IMAGENET_MEAN, IMAGENET_STD
from ..prediction.job import require_columns, safe_file_id
from ..prediction.job_dir import MASK_SETS
from ..utils.lazy import lazy_module
from .checks import resolve_pseudo_label_dir  # noqa: F401  (importable from here, as in 0.1.0)


datasets = lazy_module("datasets")

logger = logging.getLogger(__name__)

# Bumped whenever the rows written by `_generate_pairs` change meaning, so that old caches are not reused.
CACHE_VERSION = "cpfcte-stage2-1"
LABEL_COLUMN = "label"
# What `PseudoLabelTransform` keeps of the decoded pairs, per process: the demo's 2,000 pairs of 96 px take 74 MB.
DECODED_CACHE_BYTES = 256 * 2**20


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


def leave_out_rejected(dataset, mask_dir: Path):
    """`dataset` without the images rejected in the review of its pseudo-labels (`review.json` of the labelling
    output directory that holds `mask_dir`, `cpfcte_hf.review`), and how many were left out (logged)."""
    from ..review import rejected_ids

    root = mask_dir.parent if mask_dir.name in MASK_SETS else mask_dir
    rejected = rejected_ids(root)
    if not rejected:
        return dataset, 0
    keep = [index for index, image_id in enumerate(dataset["id"]) if str(image_id) not in rejected]
    left_out = len(dataset) - len(keep)
    logger.warning(f"{left_out} image(s) rejected in {root / 'review.json'} are left out of training.")
    return (dataset.select(keep) if left_out else dataset), left_out


# ----------------------------------------------------------------------------------------------------- records


def pseudo_label_records(dataset, mask_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """
    The records of the pairs to build, in the order of `dataset` (columns `image`, `id`): `{"id", "image": {"bytes",
    "path"} (the stored image, not decoded), "label": <mask_dir>/<id>.png}` for every image with a mask, and the
    images without one as loader-report items `{"id", "image", "reason"}`.
    """
    require_columns(dataset, ("image", "id"), what="training dataset")
    stored = dataset.select_columns(["image", "id"]).cast_column("image", datasets.Image(decode=False))
    records, missing = [], []
    for image, image_id in zip(stored["image"], stored["id"]):
        image_id = str(image_id)
        label = os.path.abspath(os.path.join(mask_dir, f"{safe_file_id(image_id)}.png"))
        if os.path.isfile(label):
            records.append({"id": image_id, "image": dict(image), LABEL_COLUMN: label})
        else:
            missing.append({"id": image_id, "image": describe_source(image), "reason": f"no pseudo-label {label}"})
    return records, missing


def records_fingerprint(records: Sequence[dict]) -> str:
    """`files_fingerprint` of the files the records name: every mask, and every image stored as a path (an image
    stored as bytes is part of the records themselves, which `datasets` hashes into the cache key)."""
    paths = [record["image"]["path"] for record in records if record["image"].get("bytes") is None]
    return files_fingerprint([*paths, *(record[LABEL_COLUMN] for record in records)])


def check_pair(record: dict, num_labels: int, ignore_index: int = IGNORE_INDEX) -> str | None:
    """What is wrong with one record's mask (None: nothing): unreadable, not the image's size, or values that are
    neither class ids `0..num_labels - 1` nor `ignore_index`. Reads the whole mask and only the image's header."""
    path, image_id = record[LABEL_COLUMN], record["id"]
    try:
        mask = read_mask(path)
    except ValueError as error:  # read_mask's message names the file
        return str(error)
    except OSError as error:
        return f"{path}: unreadable mask: {error}"
    image = record["image"]
    try:
        with Image.open(_open_source(image)) as opened:
            width, height = displayed_size(opened)
    except OSError as error:
        return f"{describe_source(image)}: unreadable image {image_id!r}: {error}"
    if mask.shape != (height, width):
        return f"{path}: mask is {mask.shape[::-1]} (w x h) but image {image_id!r} is {(width, height)}."
    bad = (mask >= num_labels) & (mask != ignore_index)
    if bad.any():
        return (
            f"{path}: values {np.unique(mask[bad]).tolist()[:10]} are neither class ids 0..{num_labels - 1} "
            f"nor {ignore_index} (ignore)."
        )
    return None


def _generate_pairs(records, num_labels, ignore_index, fingerprint, version):
    # `fingerprint` and `version` are unused here: they are part of the cache key (the generator's kwargs).
    for record in records:
        yield {**record, ERROR_COLUMN: check_pair(record, num_labels, ignore_index)}


def pair_features() -> datasets.Features:
    """`image` (decoded on access), `label` (the mask file, read by `PseudoLabelTransform`), `id`."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            LABEL_COLUMN: datasets.Image(decode=False),
            "id": datasets.Value("string"),
        }
    )


def pseudo_label_dataset(
    dataset,
    mask_dir: str | os.PathLike,
    num_labels: int,
    ignore_index: int = IGNORE_INDEX,
    cache_dir: str | None = None,
    num_proc: int | None = None,
):
    """
    The training pairs of stage 2 as a `datasets.Dataset`: the images of `dataset` (a split with `image` and `id`
    columns) that have a mask `<mask_dir>/<id>.png`, with columns `image`, `label` (the mask file) and `id`.

    Images without a mask (e.g. failed in pseudo-labelling) are left out with a warning and listed in the result's
    `cpfcte_hf.data.loader_report`; none at all is a `FileNotFoundError`. Every mask is checked once, when the pairs
    are built (`check_pair`); a bad one is a `ValueError` naming the file. The pairs are cached in Arrow files
    (`cache_dir`, default the `datasets` cache), rebuilt when a mask or an image file changes.
    """
    mask_dir = Path(mask_dir)
    records, missing = pseudo_label_records(dataset, mask_dir)
    total = len(records) + len(missing)
    if not records:
        raise FileNotFoundError(
            f"None of the {total} images (e.g. {[item['id'] for item in missing[:3]]}) has a pseudo-label <id>.png in "
            f"{str(mask_dir)!r}: wrong directory or wrong split?"
        )
    if missing:
        logger.warning(
            f"{len(missing)} of {total} images have no pseudo-label in {mask_dir} and are left out "
            f"(e.g. {[item['id'] for item in missing[:5]]})."
        )
    pairs = datasets.Dataset.from_generator(
        _generate_pairs,
        features=datasets.Features({**pair_features(), ERROR_COLUMN: datasets.Value("string")}),
        cache_dir=cache_dir,
        num_proc=num_proc if num_proc and num_proc > 1 and len(records) > 1 else None,
        gen_kwargs=dict(
            records=records,
            num_labels=int(num_labels),
            ignore_index=int(ignore_index),
            fingerprint=records_fingerprint(records),
            version=CACHE_VERSION,
        ),
    )
    problems = [error for error in pairs.data.column(ERROR_COLUMN).to_pylist() if error is not None]
    if problems:
        more = f" ({len(problems) - 1} more bad pseudo-label(s) in {mask_dir})" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
    return attach_loader_report(pairs.remove_columns(ERROR_COLUMN), skipped=missing)


# ----------------------------------------------------------------------------------------------------- augmentation


def read_label(label) -> np.ndarray:
    """The `(H, W)` uint8 class ids of a `label` value (`{"bytes", "path"}`, as `datasets.Image(decode=False)` gives
    it, or a path), read as `read_mask` reads a mask file."""
    return read_mask(_open_source(label))


@dataclass
class PseudoLabelTransform:
    """
    kazuto1011's augmentation as a `with_transform` callable: a batch of rows of `pseudo_label_dataset` (`image`,
    `label`) -> `{"pixel_values": [(3, crop, crop) float32], "labels": [(crop, crop) int64]}`, each row through
    `random_scale_crop_flip` in turn with torch's global generator (which `DataLoader` seeds per worker): the same
    draws, in the same order, as one call per item.

    A row's image is decoded (a PIL image) or stored (`{"bytes", "path"}`, `datasets.Image(decode=False)`, as
    `build_train_set` gives it), then decoded here by `datasets`' own decoder (the same pixels). Pairs decoded from
    mask files are kept, keyed by the mask's path, up to `decoded_cache_bytes` per process (then the rest are decoded
    each time), so that the epochs after the first skip the image and mask decoding: a tenth of a stage-2 step of the
    demo (README, "What the demo measures"). The arrays kept are read-only.
    """

    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip_prob: float = 0.5
    image_mean: Sequence[float] = IMAGENET_MEAN
    image_std: Sequence[float] = IMAGENET_STD
    ignore_index: int = IGNORE_INDEX
    vflip_prob: float = 0.0
    transpose_prob: float = 0.0
    decoded_cache_bytes: int = DECODED_CACHE_BYTES
    _decoded: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _decoded_bytes: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.crop_size = int(self.crop_size)
        self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        self.ignore_index = int(self.ignore_index)
        probabilities = (self.flip_prob, self.vflip_prob, self.transpose_prob)
        if (
            self.crop_size < 1
            or not 0 < self.scale_range[0] <= self.scale_range[1]
            or not all(0.0 <= p <= 1.0 for p in probabilities)
        ):
            raise ValueError(
                f"Bad augmentation: crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"flip_prob={self.flip_prob}, vflip_prob={self.vflip_prob}, transpose_prob={self.transpose_prob}."
            )

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        output = {"pixel_values": [], "labels": []}
        for image, label in zip(batch["image"], batch[LABEL_COLUMN]):
            rgb, mask = self.decoded_pair(image, label)
            pixel_values, labels = random_scale_crop_flip(
                rgb,
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
            output["pixel_values"].append(pixel_values)
            output["labels"].append(labels)
        return output

    def decoded_pair(self, image, label) -> tuple[np.ndarray, np.ndarray]:
        """The `(H, W, 3)` uint8 image and `(H, W)` uint8 mask of a row, from the kept pairs when it is there."""
        key = (
            label.get("path") if isinstance(label, dict) else label if isinstance(label, (str, os.PathLike)) else None
        )
        pair = self._decoded.get(key) if key is not None else None
        if pair is not None:
            return pair
        if isinstance(image, dict):
            image = datasets.Image().decode_example(image)
        pair = (to_rgb_array(image), read_label(label))
        size = pair[0].nbytes + pair[1].nbytes
        if key is not None and self._decoded_bytes + size <= self.decoded_cache_bytes:
            for array in pair:
                array.setflags(write=False)
            self._decoded[key] = pair
            self._decoded_bytes += size
        return pair


def augmented_pairs(pairs, transform: PseudoLabelTransform):
    """`pairs` (`pseudo_label_dataset`) through `transform` (`with_transform`), its images stored rather than decoded
    by `datasets`: the transform decodes each one once while its cache holds them."""
    return pairs.cast_column("image", datasets.Image(decode=False)).with_transform(transform)


# ----------------------------------------------------------------------------------------------------- 0.1.0


class PseudoLabelDataset(torch.utils.data.Dataset):
    """
    The 0.1.0 interface of stage 2's training pairs, over `pseudo_label_dataset` (`pairs`) and
    `PseudoLabelTransform` (`transform`): items `{"pixel_values": (3, crop, crop) float32, "labels": (crop, crop)
    int64}`, `read_pair` for an item before augmentation. Images without a mask are left out with a warning; none
    at all is an error; a bad mask is an error when the dataset is made.

    Args:
        dataset: a split with `image` and `id` columns. mask_dir: the folder of `<id>.png`. num_labels: classes.
        *augmentation, **options: the fields of `PseudoLabelTransform` (`crop_size`, `scale_range`, `flip_prob`,
            `image_mean`, `image_std`, `ignore_index`, `vflip_prob`, `transpose_prob`, in 0.1.0's order), and
            `cache_dir` of the pairs' Arrow files.
    """

    def __init__(self, dataset, mask_dir: str | os.PathLike, num_labels: int, *augmentation, **options):
        cache_dir = options.pop("cache_dir", None)
        self.transform = PseudoLabelTransform(*augmentation, **options)
        self.mask_dir = Path(mask_dir)
        self.num_labels = int(num_labels)
        self.pairs = pseudo_label_dataset(dataset, mask_dir, num_labels, self.transform.ignore_index, cache_dir)
        self.skipped = loader_report(self.pairs)["skipped"]
        self._items = augmented_pairs(self.pairs, self.transform)

    def __len__(self) -> int:
        return len(self.pairs)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """`(H, W, 3)` uint8 image, `(H, W)` uint8 mask and the id of item `index`, before augmentation."""
        row = self.pairs[index]
        return to_rgb_array(row["image"]), read_label(row[LABEL_COLUMN]), str(row["id"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._items[index]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return self._items.__getitems__(indices)
