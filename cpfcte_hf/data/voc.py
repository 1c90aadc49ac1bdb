# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""PASCAL VOC 2012 (+ SBD) from the standard layout, as `datasets` objects (docs/method.md section 6).

Layout read (`root` may be the folder holding `VOCdevkit/`, `VOCdevkit/` itself, or the `VOC2012/` folder)::

    VOC2012/JPEGImages/<id>.jpg                    (.jpeg / .png accepted too)
    VOC2012/SegmentationClassAug/<id>.png          palette or grey index PNG, 255 = ignore (preferred)
    VOC2012/SegmentationClass/<id>.png             used when there is no SegmentationClassAug/
    VOC2012/ImageSets/Segmentation/<split>.txt     one id per line; `train_aug` is also found as `trainaug.txt`
    VOC2012/class_names.txt                        optional: one name per line, background first
    VOC2012/cls_labels_onehot.npy                  optional (or pass `cls_labels=`): AFA/ToCo dict id -> float[C-1]

The same loader reads the procedural set written by `scripts/make_shapes.py` (its `class_names.txt` carries the
class list), and any custom data put in this layout.

Image-level labels come from `cls_labels` where given, else from the mask's values (255 ignored). Background (0)
is always in `labels`.

What happens with bad input (decided per case; everything is checked when the dataset is built, never inside a
DataLoader worker):

* missing root, split file, image, or class-label file: `FileNotFoundError` naming the path;
* a mask missing for an id: `FileNotFoundError` naming the path, unless labels come from `cls_labels` (then the
  row has no mask, `mask` is None, and the eval transform gives it an all-ignore mask);
* an id with `..` or an absolute path in the split file: `ValueError` naming the file and line (the whole load
  is refused: a split file like that is wrong, or hostile);
* a corrupt or truncated image, a mask whose size differs from its image, a mask with values outside 0..C-1 and
  255, or a colour-coded (RGB) mask: the item is skipped, and all skipped items are reported in one warning;
  if nothing is left, `ValueError`;
* CMYK, RGBA, grayscale, palette and 16-bit images: kept, converted to RGB by `to_rgb_array` in the transforms
  (alpha dropped, grey repeated, 16 bits scaled to 8);
* an image with no foreground label: kept, with `labels == [0]` (a valid negative example);
  `drop_background_only=True` leaves such images out (reported at INFO level).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..models.cpfcte.class_names import VOC_CLASSES
from ..utils.lazy import lazy_module
from ._common import as_splits, build_from_records, check_class_names, check_root, read_class_names, read_id_list
from ._records import (  # noqa: F401 - CLS_LABELS_FILE: importable here too
    CLS_LABELS_FILE,
    cls_label_table,
    find_listed_image,
    listed_record,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


SPLIT_ALIASES = {"train_aug": ("train_aug", "trainaug"), "trainaug": ("trainaug", "train_aug")}
CLASS_NAMES_FILE = "class_names.txt"


def find_voc_dir(root: str) -> str:
    """The folder holding `JPEGImages/`: `root`, `root/VOC2012` or `root/VOCdevkit/VOC2012`."""
    root = check_root(root)
    for candidate in (root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise FileNotFoundError(
        f"No VOC layout under {root}: expected JPEGImages/ in it, in VOC2012/ or in VOCdevkit/VOC2012/."
    )


def voc_split_file(voc_dir: str, split: str) -> str:
    """Path of the split list; `split` may also be a path to a list file."""
    if split.endswith(".txt") and os.path.isfile(split):
        return split
    list_dir = os.path.join(voc_dir, "ImageSets", "Segmentation")
    tried = [os.path.join(list_dir, f"{name}.txt") for name in SPLIT_ALIASES.get(split, (split,))]
    for path in tried:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Split file not found: {' or '.join(tried)}")


def _mask_dir(voc_dir: str, mask_dir) -> str | None:
    if mask_dir is None:
        return None
    if mask_dir != "auto":
        path = mask_dir if os.path.isabs(mask_dir) else os.path.join(voc_dir, mask_dir)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Mask directory not found: {path}")
        return path
    for name in ("SegmentationClassAug", "SegmentationClass"):
        path = os.path.join(voc_dir, name)
        if os.path.isdir(path):
            return path
    return None


def voc_class_names(root: str, class_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """`class_names` if given, else `class_names.txt` of the layout if present, else the 21 VOC classes."""
    if class_names is not None:
        return check_class_names(class_names)
    voc_dir = find_voc_dir(root)
    for folder in (voc_dir, check_root(root)):
        path = os.path.join(folder, CLASS_NAMES_FILE)
        if os.path.isfile(path):
            return read_class_names(path)
    return tuple(VOC_CLASSES)


def check_voc(root: str, split: str | Sequence[str] = "train_aug", *, class_names=None, mask_dir="auto", **_) -> None:
    """What `load_voc` reads before any image: the layout, the class names, the mask folder, and each split file
    with its ids (the loader's errors, naming the path); no image is opened."""
    voc_dir = find_voc_dir(root)
    voc_class_names(root, class_names)
    _mask_dir(voc_dir, mask_dir)
    for split_name in as_splits(split)[0]:
        read_id_list(voc_split_file(voc_dir, split_name))


def load_voc(
    root: str,
    split: str | Sequence[str] = "train_aug",
    *,
    class_names: Sequence[str] | None = None,
    cls_labels: str | bool | None = None,
    mask_dir: str | None = "auto",
    drop_background_only: bool = False,
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Loads VOC-layout data as a `datasets.Dataset` (one split) or `DatasetDict` (a list of splits).

    Args:
        root: the dataset folder (see the module docstring for what it may point at).
        split: `"train_aug"` (alias `"trainaug"`), `"train"`, `"val"`, any list name under
            `ImageSets/Segmentation/`, a path to a list file, or a list of those.
        class_names: class names, background first; default `class_names.txt` of the layout, else VOC's 21.
        cls_labels: path to an AFA/ToCo `cls_labels_onehot.npy`; None looks for one in the VOC folder; False
            never uses one (labels then come from the masks).
        mask_dir: `"auto"` (SegmentationClassAug, else SegmentationClass), a folder name or path, or None for
            no masks (then labels must come from `cls_labels`).
        drop_background_only: leave out images whose labels are only the background.
        cache_dir: Arrow cache folder (default: the `datasets` cache).
        num_proc: processes used to validate the files at build time.

    Returns:
        Columns `image`, `mask` (when masks exist), `labels` (`List(ClassLabel)`), `id`.
    """
    voc_dir = find_voc_dir(root)
    names = voc_class_names(root, class_names)
    extra_files = [p for p in (os.path.join(voc_dir, CLASS_NAMES_FILE),) if class_names is None and os.path.isfile(p)]
    cls_labels, label_table = cls_label_table(cls_labels, voc_dir, len(names))
    if cls_labels:
        extra_files.append(cls_labels)
    masks = _mask_dir(voc_dir, mask_dir)
    if masks is None and label_table is None:
        raise FileNotFoundError(
            f"No masks under {voc_dir} (SegmentationClassAug/ or SegmentationClass/) and no cls_labels file: "
            "image-level labels cannot be derived."
        )
    splits, as_dict = as_splits(split)
    result = {}
    for split_name in splits:
        list_file = voc_split_file(voc_dir, split_name)
        records = _voc_records(voc_dir, list_file, masks, label_table, cls_labels)
        name = os.path.splitext(os.path.basename(split_name))[0] if split_name.endswith(".txt") else split_name
        result[name] = build_from_records(
            records,
            names,
            with_mask=masks is not None,
            source=f"VOC split {name!r} of {voc_dir}",
            split=name,
            cache_dir=cache_dir,
            num_proc=num_proc,
            drop_background_only=drop_background_only,
            extra_files=[list_file, *extra_files],
        )
    return datasets.DatasetDict(result) if as_dict else next(iter(result.values()))


def _voc_records(voc_dir: str, list_file: str, masks: str | None, label_table: dict | None, cls_labels) -> list:
    """The records of the ids of `list_file`: image in `JPEGImages/`, mask in `masks` (None: no masks)."""
    image_dir = os.path.join(voc_dir, "JPEGImages")
    return [
        listed_record(
            item_id,
            find_listed_image(image_dir, item_id, list_file),
            None if masks is None else os.path.join(masks, item_id + ".png"),
            label_table,
            list_file,
            cls_labels,
        )
        for item_id in read_id_list(list_file)
    ]


__all__ = ["check_voc", "find_voc_dir", "load_voc", "voc_class_names", "voc_split_file"]
