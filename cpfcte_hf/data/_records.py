# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The records of the list-file layouts (VOC, COCO's ToCo layout): each listed id's image, its mask where the layout
has masks, and its tags where an AFA/ToCo `cls_labels_onehot.npy` gives them; every error names the list file."""

from __future__ import annotations

import os

from ._common import find_file, load_cls_labels


CLS_LABELS_FILE = "cls_labels_onehot.npy"
LISTED_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def cls_label_table(cls_labels: str | bool | None, folder: str, num_classes: int) -> tuple[str | bool, dict | None]:
    """`(the class-label file or False, its table id -> class ids or None)`. `cls_labels`: a path; None looks for
    `folder/cls_labels_onehot.npy`; False never uses one."""
    if cls_labels is None:
        candidate = os.path.join(folder, CLS_LABELS_FILE)
        cls_labels = candidate if os.path.isfile(candidate) else False
    return cls_labels, load_cls_labels(cls_labels, num_classes) if cls_labels else None


def find_listed_image(folder: str, item_id: str, list_file: str) -> str:
    """The image of `item_id` in `folder` (.jpg, .jpeg or .png); `FileNotFoundError` naming the list file if none."""
    image = find_file(folder, item_id, LISTED_IMAGE_EXTENSIONS)
    if image is None:
        raise FileNotFoundError(
            f"Image not found for id {item_id!r} (listed in {list_file}): {os.path.join(folder, item_id + '.jpg')}"
        )
    return image


def listed_record(
    item_id: str, image: str, mask: str | None, label_table: dict | None, list_file: str, cls_labels
) -> dict:
    """The record of one listed id. A missing `mask` file is an error unless the table tags the id (then the row has
    no mask); an id with neither a mask nor tags is an error."""
    labels = label_table.get(item_id) if label_table is not None else None
    if mask is not None and not os.path.isfile(mask):
        if labels is None:
            raise FileNotFoundError(f"Mask not found for id {item_id!r} (listed in {list_file}): {mask}")
        mask = None
    if mask is None and labels is None:
        raise ValueError(f"Id {item_id!r} of {list_file} is neither in {cls_labels} nor has a mask.")
    return {"id": item_id, "image": image, "mask": mask, "labels": labels}
