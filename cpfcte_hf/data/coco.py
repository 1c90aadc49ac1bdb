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

import os
from collections.abc import Sequence

from ..utils.lazy import lazy_module
from ._common import as_splits, build_from_records, check_class_names, check_root, read_class_names, read_id_list
from ._records import cls_label_table, find_listed_image, listed_record
from .coco_instances import (  # noqa: F401 - MARKER_FILE, MASKS_VERSION: importable here too
    MARKER_FILE,
    MASKS_VERSION,
    coco_class_names_from_annotations,
    coco_image_folder,
    instances_annotation_file,
    load_instances_split,
    paint_coco_masks,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks

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


def _split_folder(item_id: str, split: str, year: str) -> str:
    for name in ("train", "val", "test"):
        if f"{name}{year}" in item_id:
            return f"{name}{year}"
    return split if split.endswith(year) else f"{split}{year}"


# ----------------------------------------------------------------------------------------------------------------
# (a) ToCo layout; (b), the official instances JSON, is `coco_instances`
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
    cls_labels, label_table = cls_label_table(cls_labels, root, len(names))
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
        image = find_listed_image(coco_image_folder(root, folder), item_id, list_file)
        mask = os.path.join(mask_root, folder, item_id + ".png") if with_mask else None
        records.append(listed_record(item_id, image, mask, label_table, list_file, cls_labels))
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


def _layout_of(root: str, split: str, layout: str, annotation_file: str | None, year: str) -> str:
    """'instances' or 'toco' for `layout` ('auto': instances when the split's annotation file exists)."""
    if layout == "auto":
        return "instances" if os.path.isfile(instances_annotation_file(root, split, annotation_file, year)) else "toco"
    if layout not in ("toco", "instances"):
        raise ValueError(f"layout must be 'auto', 'toco' or 'instances', got {layout!r}.")
    return layout


def check_coco(root, split="train", *, layout="auto", split_file=None, annotation_file=None, year="2014", **_):
    """What `load_coco` reads before any image: the root, and per split its annotation file (instances layout) or
    its split file and ids (ToCo layout), with the loader's errors; no image is opened."""
    root = check_root(root)
    for split_name in as_splits(split)[0]:
        if _layout_of(root, split_name, layout, annotation_file, year) == "instances":
            path = instances_annotation_file(root, split_name, annotation_file, year)
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
    shared = dict(class_names=class_names, year=year, cache_dir=cache_dir, num_proc=num_proc)
    result = {}
    for split_name in splits:
        if _layout_of(root, split_name, layout, annotation_file, year) == "instances":
            instances = dict(annotation_file=annotation_file, mask_dir=mask_dir, min_size=min_size)
            background_only = True if drop_background_only is None else drop_background_only
            result[split_name] = load_instances_split(
                root, split_name, drop_background_only=background_only, **instances, **shared
            )
        else:
            toco = dict(cls_labels=cls_labels, split_file=split_file, drop_background_only=bool(drop_background_only))
            result[split_name] = _load_toco(root, split_name, **toco, **shared)
    return datasets.DatasetDict(result) if as_dict else next(iter(result.values()))


__all__ = ["COCO_CLASSES", "check_coco", "coco_class_names_from_annotations", "load_coco", "paint_coco_masks"]
