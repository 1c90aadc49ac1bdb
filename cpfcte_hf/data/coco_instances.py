# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""COCO's official instances JSON (`load_coco(layout="instances")`): each image's instance masks painted into one
index PNG (see `cpfcte_hf.data.coco`), written once, atomically and resumably, then loaded like the other layouts."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np

from ..models.cpfcte.visualization import save_mask
from ._common import build_from_records, check_relative_id


logger = logging.getLogger(__name__)

MARKER_FILE = ".cpfcte_masks.json"
MASKS_VERSION = "coco-masks-1"


def coco_image_folder(root: str, folder: str) -> str:
    """The folder of one COCO image set (`train2014`, ...): `root/<folder>` or `root/JPEGImages/<folder>`."""
    for candidate in (os.path.join(root, folder), os.path.join(root, "JPEGImages", folder)):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"COCO image folder not found: {os.path.join(root, folder)} (nor {os.path.join(root, 'JPEGImages', folder)})"
    )


_COCO_API = None  # set in the parent before forking the painting pool; read by `_paint_one`


def coco_class_names_from_annotations(coco) -> tuple[str, ...]:
    """("background", category names in `sorted(getCatIds())` order)."""
    categories = coco.loadCats(sorted(coco.getCatIds()))
    return ("background", *(category["name"] for category in categories))


def _paint(coco, image_id: int, class_of_category: dict) -> np.ndarray:
    info = coco.loadImgs([image_id])[0]
    mask = np.zeros((info["height"], info["width"]), np.uint8)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    annotations = sorted(annotations, key=lambda a: (not a.get("iscrowd", 0), -float(a.get("area", 0.0))))
    for annotation in annotations:
        if annotation["category_id"] not in class_of_category:
            continue
        region = coco.annToMask(annotation).astype(bool)
        mask[region] = class_of_category[annotation["category_id"]]
    return mask


def _paint_one(job):
    image_id, path, class_of_category = job
    save_mask(_paint(_COCO_API, image_id, class_of_category), path)
    return path


def paint_coco_masks(coco, image_ids: Sequence[int], mask_dir: str, annotation_file: str, num_proc: int | None = None):
    """Writes one index PNG per image to `mask_dir` (skipping those already written for this annotation file).

    Returns `{image_id: png_path}`.
    """
    global _COCO_API
    os.makedirs(mask_dir, exist_ok=True)
    stat = os.stat(annotation_file)
    marker = {
        "annotation_file": os.path.abspath(annotation_file),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "version": MASKS_VERSION,
    }
    marker_path = os.path.join(mask_dir, MARKER_FILE)
    previous = None
    if os.path.isfile(marker_path):
        with open(marker_path, encoding="utf-8") as handle:
            previous = json.load(handle)
    if previous != marker:
        stale = [name for name in os.listdir(mask_dir) if name.endswith(".png")]
        if stale:
            logger.warning(
                "%s: annotations changed since its masks were written; rewriting %d masks.", mask_dir, len(stale)
            )
        for name in stale:
            os.remove(os.path.join(mask_dir, name))
        with open(marker_path, "w", encoding="utf-8") as handle:
            json.dump(marker, handle)
    class_of_category = {category: index + 1 for index, category in enumerate(sorted(coco.getCatIds()))}
    paths, jobs = {}, []
    for image_id in image_ids:
        stem = os.path.splitext(coco.loadImgs([image_id])[0]["file_name"])[0]
        path = os.path.join(mask_dir, stem + ".png")
        paths[image_id] = path
        if not os.path.isfile(path):
            jobs.append((image_id, path, class_of_category))
    if jobs:
        logger.info("Painting %d COCO masks into %s", len(jobs), mask_dir)
        _COCO_API = coco
        try:
            if num_proc and num_proc > 1 and len(jobs) > 1 and "fork" in multiprocessing.get_all_start_methods():
                with multiprocessing.get_context("fork").Pool(num_proc) as pool:
                    for _ in pool.imap_unordered(_paint_one, jobs, chunksize=64):
                        pass
            else:
                for job in jobs:
                    _paint_one(job)
        finally:
            _COCO_API = None
    return paths


def load_instances_split(
    root, split, *, annotation_file, mask_dir, year, min_size, drop_background_only, cache_dir, num_proc, class_names
):
    """One split of the instances layout (see `load_coco`): its masks painted (once), then validated and cached."""
    from pycocotools.coco import COCO

    folder = f"{split}{year}"
    annotation_file = instances_annotation_file(root, split, annotation_file, year)
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
    image_dir = coco_image_folder(root, folder)
    coco = COCO(annotation_file)
    names = coco_class_names_from_annotations(coco)
    if class_names is not None and tuple(class_names) != names:
        raise ValueError(f"class_names {list(class_names)[:5]}... differ from the categories of {annotation_file}.")
    image_ids = _large_enough_images(coco, annotation_file, min_size)
    records = []
    for image_id in image_ids:
        info = coco.loadImgs([image_id])[0]
        image = os.path.join(image_dir, info["file_name"])
        if not os.path.isfile(image):
            raise FileNotFoundError(f"Image not found for id {image_id} (listed in {annotation_file}): {image}")
        records.append({"id": os.path.splitext(info["file_name"])[0], "image": image, "coco_id": image_id})
    mask_dir = mask_dir or os.path.join(root, "masks_from_instances", folder)
    try:
        mask_paths = paint_coco_masks(coco, image_ids, mask_dir, annotation_file, num_proc)
    except OSError as error:
        raise OSError(f"Cannot write COCO masks to {mask_dir} ({error}); pass mask_dir= a writable folder.") from error
    for record in records:
        record["mask"] = mask_paths[record.pop("coco_id")]
    return build_from_records(
        records,
        names,
        with_mask=True,
        source=f"COCO {folder} from {annotation_file}",
        split=split,
        cache_dir=cache_dir,
        num_proc=num_proc,
        drop_background_only=drop_background_only,
        extra_files=[annotation_file],
    )


def _large_enough_images(coco, annotation_file: str, min_size: int) -> list[int]:
    """The ids of the images at least `min_size` pixels a side (the others are logged); their file names checked."""
    image_ids = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs([image_id])[0]
        check_relative_id(info["file_name"], annotation_file)
        if min(info["height"], info["width"]) < min_size:
            continue
        image_ids.append(image_id)
    if not image_ids:
        raise ValueError(f"No image of {annotation_file} is at least {min_size} pixels a side.")
    skipped_small = len(coco.getImgIds()) - len(image_ids)
    if skipped_small:
        logger.info("%s: left out %d images under %d pixels a side.", annotation_file, skipped_small, min_size)
    return image_ids


def instances_annotation_file(root: str, split: str, annotation_file: str | None, year: str) -> str:
    """The instances JSON of a split: `annotation_file`, else `root/annotations/instances_<split><year>.json`."""
    return annotation_file or os.path.join(root, "annotations", f"instances_{split}{year}.json")


__all__ = [
    "MARKER_FILE",
    "MASKS_VERSION",
    "coco_class_names_from_annotations",
    "coco_image_folder",
    "paint_coco_masks",
]
