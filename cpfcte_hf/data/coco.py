# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""MS COCO 2014 for WSSS (81 classes, 0 = background; docs/method.md section 6), from either of two layouts.

(a) The AFA/ToCo layout (`layout="toco"`)::

    <root>/train2014/<id>.jpg  and  <root>/val2014/<id>.jpg      (or <root>/JPEGImages/{train2014,val2014}/)
    <root>/SegmentationClass/{train2014,val2014}/<id>.png        index PNGs, 255 = ignore
    <root>/<split>.txt  (or ImageSets/<split>.txt, ImageSets/Segmentation/<split>.txt, or `split_file=`)
    <root>/cls_labels_onehot.npy                                 optional (or `cls_labels=`): id -> float[80]
    <root>/class_names.txt                                       optional: 81 names, background first

Ids look like `COCO_train2014_000000000009`; the image folder is taken from the id (`train2014` / `val2014`),
else from the split name.

(b) The official annotations (`layout="instances"`)::

    <root>/annotations/instances_{train,val}2014.json            (or `annotation_file=`)
    <root>/{train,val}2014/<file_name>                           (or <root>/JPEGImages/{train,val}2014/)

Each image's instance masks (pycocotools) are painted into one index PNG: category `k`-th in
`sorted(getCatIds())` order -> class `k` (1..80), crowd regions first, then instances from the largest to the
smallest so that small objects stay visible. Crowd regions get their class (they do contain the object, so the
image-level tag is right). The PNGs are written once to `mask_dir` (default `<root>/masks_from_instances/<split>2014/`,
a folder this loader owns), atomically and resumably: an interrupted run continues where it stopped, and a changed
annotation file rewrites them. ViT-PCM's filter is the default: images under `min_size=256` pixels a side and
masks with fewer than 2 values (background only) are left out (INFO log; set `min_size=0`,
`drop_background_only=False` to keep them).

Bad input is handled as in `cpfcte_hf.data.voc` (missing files -> error naming the path, unsafe ids -> error,
unreadable images / mismatched or out-of-range masks -> skipped with one warning, odd image modes -> converted).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np

from ..models.cpfcte.visualization import save_mask
from ..utils.lazy import lazy_module
from ._common import (
    as_splits,
    build_from_records,
    check_class_names,
    check_relative_id,
    check_root,
    find_file,
    load_cls_labels,
    read_class_names,
    read_id_list,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


logger = logging.getLogger(__name__)

COCO_CLASSES = (
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
MARKER_FILE = ".cpfcte_masks.json"
MASKS_VERSION = "coco-masks-1"


def _image_folder(root: str, folder: str) -> str:
    for candidate in (os.path.join(root, folder), os.path.join(root, "JPEGImages", folder)):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"COCO image folder not found: {os.path.join(root, folder)} (nor {os.path.join(root, 'JPEGImages', folder)})"
    )


def _split_folder(item_id: str, split: str, year: str) -> str:
    for name in ("train", "val", "test"):
        if f"{name}{year}" in item_id:
            return f"{name}{year}"
    return split if split.endswith(year) else f"{split}{year}"


# ----------------------------------------------------------------------------------------------------------------
# (a) ToCo layout
# ----------------------------------------------------------------------------------------------------------------


def _toco_split_file(root: str, split: str, split_file: str | None) -> str:
    if split_file is not None:
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"Split file not found: {split_file}")
        return split_file
    tried = [
        os.path.join(root, f"{split}.txt"),
        os.path.join(root, "ImageSets", f"{split}.txt"),
        os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"),
    ]
    for path in tried:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Split file not found: {' or '.join(tried)}")


def _load_toco(root, split, *, class_names, cls_labels, split_file, year, drop_background_only, cache_dir, num_proc):
    names_file = os.path.join(root, "class_names.txt")
    extra_files = []
    if class_names is not None:
        names = check_class_names(class_names)
    elif os.path.isfile(names_file):
        names = read_class_names(names_file)
        extra_files.append(names_file)
    else:
        names = COCO_CLASSES
    if cls_labels is None:
        candidate = os.path.join(root, "cls_labels_onehot.npy")
        cls_labels = candidate if os.path.isfile(candidate) else False
    label_table = load_cls_labels(cls_labels, len(names)) if cls_labels else None
    if cls_labels:
        extra_files.append(cls_labels)
    list_file = _toco_split_file(root, split, split_file)
    mask_root = os.path.join(root, "SegmentationClass")
    with_mask = os.path.isdir(mask_root)
    if not with_mask and label_table is None:
        raise FileNotFoundError(
            f"No masks ({mask_root}) and no cls_labels file: image-level labels cannot be derived."
        )
    records = []
    for item_id in read_id_list(list_file):
        folder = _split_folder(item_id, split, year)
        image = find_file(_image_folder(root, folder), item_id, (".jpg", ".jpeg", ".png"))
        if image is None:
            raise FileNotFoundError(
                f"Image not found for id {item_id!r} (listed in {list_file}): "
                f"{os.path.join(_image_folder(root, folder), item_id + '.jpg')}"
            )
        labels = label_table.get(item_id) if label_table is not None else None
        mask = os.path.join(mask_root, folder, item_id + ".png") if with_mask else None
        if mask is not None and not os.path.isfile(mask):
            if labels is None:
                raise FileNotFoundError(f"Mask not found for id {item_id!r} (listed in {list_file}): {mask}")
            mask = None
        if mask is None and labels is None:
            raise ValueError(f"Id {item_id!r} of {list_file} is neither in {cls_labels} nor has a mask.")
        records.append({"id": item_id, "image": image, "mask": mask, "labels": labels})
    return build_from_records(
        records,
        names,
        with_mask=with_mask,
        source=f"COCO split {split!r} of {root}",
        split=split,
        cache_dir=cache_dir,
        num_proc=num_proc,
        drop_background_only=drop_background_only,
        extra_files=[list_file, *extra_files],
    )


# ----------------------------------------------------------------------------------------------------------------
# (b) official instances JSON
# ----------------------------------------------------------------------------------------------------------------

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


def _load_instances(
    root, split, *, annotation_file, mask_dir, year, min_size, drop_background_only, cache_dir, num_proc, class_names
):
    from pycocotools.coco import COCO

    folder = f"{split}{year}"
    annotation_file = _annotation_file(root, split, annotation_file, year)
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
    image_dir = _image_folder(root, folder)
    coco = COCO(annotation_file)
    names = coco_class_names_from_annotations(coco)
    if class_names is not None and tuple(class_names) != names:
        raise ValueError(f"class_names {list(class_names)[:5]}... differ from the categories of {annotation_file}.")
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


def _annotation_file(root: str, split: str, annotation_file: str | None, year: str) -> str:
    return annotation_file or os.path.join(root, "annotations", f"instances_{split}{year}.json")


def _layout_of(root: str, split: str, layout: str, annotation_file: str | None, year: str) -> str:
    """'instances' or 'toco' for `layout` ('auto': instances when the split's annotation file exists)."""
    if layout == "auto":
        return "instances" if os.path.isfile(_annotation_file(root, split, annotation_file, year)) else "toco"
    if layout not in ("toco", "instances"):
        raise ValueError(f"layout must be 'auto', 'toco' or 'instances', got {layout!r}.")
    return layout


def check_coco(root, split="train", *, layout="auto", split_file=None, annotation_file=None, year="2014", **_):
    """What `load_coco` reads before any image: the root, and per split its annotation file (instances layout) or
    its split file and ids (ToCo layout), with the loader's errors; no image is opened."""
    root = check_root(root)
    for split_name in as_splits(split)[0]:
        if _layout_of(root, split_name, layout, annotation_file, year) == "instances":
            path = _annotation_file(root, split_name, annotation_file, year)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"COCO annotation file not found: {path}")
        else:
            read_id_list(_toco_split_file(root, split_name, split_file))


def load_coco(
    root: str,
    split: str | Sequence[str] = "train",
    *,
    layout: str = "auto",
    class_names: Sequence[str] | None = None,
    cls_labels: str | bool | None = None,
    split_file: str | None = None,
    annotation_file: str | None = None,
    mask_dir: str | None = None,
    year: str = "2014",
    min_size: int = 256,
    drop_background_only: bool | None = None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Loads COCO as a `datasets.Dataset` (one split) or `DatasetDict` (a list of splits).

    Args:
        root: the COCO folder (see the module docstring for both layouts).
        split: `"train"`, `"val"` (any name with a list file in the ToCo layout), or a list of them.
        layout: `"toco"`, `"instances"`, or `"auto"`: instances when `annotations/instances_<split><year>.json`
            exists (or `annotation_file` is given), else ToCo.
        class_names: ToCo layout: class names, background first (default `class_names.txt`, else COCO's 81).
            Instances layout: taken from the JSON; if given, must match.
        cls_labels: ToCo layout: `cls_labels_onehot.npy` path; None looks in `root`; False never uses one.
        split_file: ToCo layout: an explicit list file (one split only).
        annotation_file, mask_dir: instances layout: the JSON, and where to write the painted masks.
        min_size: instances layout: leave out images smaller than this on either side (ViT-PCM: 256).
        drop_background_only: leave out images whose labels are only the background (default: True for the
            instances layout, as ViT-PCM; False for ToCo, whose lists are already filtered).
        cache_dir, num_proc: Arrow cache folder; processes for painting masks and validating files.
    """
    root = check_root(root)
    splits, as_dict = as_splits(split)
    if split_file is not None and len(splits) > 1:
        raise ValueError("split_file names one list: load one split at a time.")
    result = {}
    for split_name in splits:
        chosen = _layout_of(root, split_name, layout, annotation_file, year)
        if chosen == "instances":
            result[split_name] = _load_instances(
                root,
                split_name,
                annotation_file=annotation_file,
                mask_dir=mask_dir,
                year=year,
                min_size=min_size,
                drop_background_only=True if drop_background_only is None else drop_background_only,
                cache_dir=cache_dir,
                num_proc=num_proc,
                class_names=class_names,
            )
        else:
            result[split_name] = _load_toco(
                root,
                split_name,
                class_names=class_names,
                cls_labels=cls_labels,
                split_file=split_file,
                year=year,
                drop_background_only=bool(drop_background_only),
                cache_dir=cache_dir,
                num_proc=num_proc,
            )
    return datasets.DatasetDict(result) if as_dict else next(iter(result.values()))


__all__ = ["COCO_CLASSES", "check_coco", "coco_class_names_from_annotations", "load_coco", "paint_coco_masks"]
