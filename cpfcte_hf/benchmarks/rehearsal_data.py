# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The data of the VOC-scale rehearsal (`rehearsal`): the generated tree and its per-size lists, and the per-image
CPU costs of what every step does on the CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.rehearsal import VOC_DIR, VOC_TRAIN_AUG_IMAGES, VOC_VAL_IMAGES, write_voc_rehearsal


def val_count(size: int) -> int:
    return max(1, round(size * VOC_VAL_IMAGES / VOC_TRAIN_AUG_IMAGES))


def prepare_tree(args, size: int) -> tuple[Path, dict]:
    """The tree for `size`, made, completed or grown (`--data_root`, else WORK/data), with `train_aug_<size>` and
    `val_<size>` lists of its first images."""
    root = Path(args.data_root or Path(args.work_dir) / "data")
    train, val = size, val_count(size)
    if (root / "rehearsal.json").is_file():  # keep what the tree has: smaller sizes read its first images
        splits = json.loads((root / "rehearsal.json").read_text())["splits"]
        train, val = max(train, splits["train_aug"]), max(val, splits["val"])
    workers = getattr(args, "generator_workers", None)
    summary = write_voc_rehearsal(str(root), train_images=train, val_images=val, seed=args.seed, num_workers=workers)
    _write_lists(root, size)
    return root, summary


def _write_lists(root: Path, size: int) -> None:
    lists = root / VOC_DIR / "ImageSets" / "Segmentation"
    for name, count in (("train_aug", size), ("val", val_count(size))):
        ids = (lists / f"{name}.txt").read_text().split()[:count]
        (lists / f"{name}_{size}.txt").write_text("\n".join(ids) + "\n")


def cpu_costs(tree: Path, count: int, split: str = "train_aug") -> dict:
    """CPU seconds per image (this process, one thread: `time.process_time`, so the machine's load barely matters)
    of what the CPU does for each image whatever the GPU: JPEG decode; stage 1's loader (decode, resize to 384; with
    the voc preset's augmentation too, as when it runs in the loader rather than on the GPU); the label pass's input (decode, resize to 960, normalise); its dense CRF at the image
    size with the image's tags (background + its classes, the docs/method.md section 3 parameters), on smooth
    probabilities made from the ground truth; stage 2's loader input (the JPEG and a palette PNG decoded)."""
    from ..data.transforms import AugmentationConfig, TrainTransform
    from ..models.cpfcte.crf import DenseCRFConfig
    from ..utils.arguments import load_preset

    torch.set_num_threads(1)
    voc = tree / VOC_DIR
    ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
    preset = load_preset("voc")
    augmentation = AugmentationConfig(
        **{key: preset[f"aug_{key}"] for key in AugmentationConfig.__dataclass_fields__ if f"aug_{key}" in preset}
    )
    train = TrainTransform(21, size=384, augmentation=augmentation)
    resize_only = TrainTransform(21, size=384, augmentation=augmentation, augment_in_loader=False)
    config = DenseCRFConfig()
    totals = {
        "decode": 0.0,
        "stage1_loader_augment_on_gpu": 0.0,
        "stage1_loader": 0.0,
        "label_input_960": 0.0,
        "crf": 0.0,
        "stage2_loader_decode": 0.0,
    }
    classes_total = 0
    for item_id in ids:
        image_path, mask_path = voc / "JPEGImages" / f"{item_id}.jpg", voc / "SegmentationClassAug" / f"{item_id}.png"
        image = _time_loaders(image_path, mask_path, train, resize_only, totals)
        classes_total += _time_crf(image, mask_path, config, totals)
    return {
        "images": len(ids),
        "classes_per_image_with_background": round(classes_total / max(1, len(ids)), 2),
        "cpu_seconds_per_image": {key: round(value / max(1, len(ids)), 4) for key, value in totals.items()},
    }


def _time_loaders(image_path: Path, mask_path: Path, train, resize_only, totals: dict) -> np.ndarray:
    """Adds the CPU seconds of the loaders' work on one image to `totals`; returns the decoded image."""
    from ..models.cpfcte.image_processing_cpfcte import resize_and_normalize

    start = time.process_time()
    with Image.open(image_path) as handle:
        image = np.asarray(handle.convert("RGB"))
    totals["decode"] += time.process_time() - start
    start = time.process_time()
    with Image.open(image_path) as handle:
        resize_only({"image": [handle.convert("RGB")], "labels": [[0]]})
    totals["stage1_loader_augment_on_gpu"] += time.process_time() - start
    start = time.process_time()
    with Image.open(image_path) as handle:
        train({"image": [handle.convert("RGB")], "labels": [[0]]})
    totals["stage1_loader"] += time.process_time() - start
    start = time.process_time()
    with Image.open(image_path) as handle:
        resize_and_normalize([np.asarray(handle.convert("RGB"))], (960, 960), (0.5,) * 3, (0.5,) * 3, Image.BILINEAR)
    totals["label_input_960"] += time.process_time() - start
    start = time.process_time()
    with Image.open(image_path) as handle, Image.open(mask_path) as mask_handle:
        np.asarray(handle.convert("RGB")), np.asarray(mask_handle)
    totals["stage2_loader_decode"] += time.process_time() - start
    return image


def _time_crf(image: np.ndarray, mask_path: Path, config, totals: dict) -> int:
    """Adds the CPU seconds of the dense CRF on one image (its tags' classes, probabilities made from its mask) to
    `totals`; returns the number of classes it ran over."""
    from ..models.cpfcte.crf import dense_crf

    with Image.open(mask_path) as mask_handle:
        mask = np.asarray(mask_handle)
    present = [0, *[int(v) for v in np.unique(mask) if 0 < v < 255]]
    probabilities = np.full((21, *mask.shape), 0.0, np.float32)
    for class_id in present:  # the truth, blurred at the borders and softened: a plausible model output
        probabilities[class_id] = 0.2 + 0.6 * (np.where(mask == 255, 0, mask) == class_id)
    probabilities[present] /= probabilities[present].sum(0, keepdims=True)
    start = time.process_time()
    dense_crf(image, probabilities, config)
    totals["crf"] += time.process_time() - start
    return len(present)
