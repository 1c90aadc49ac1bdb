# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Validation of one loader record at build time (`_common.build_from_records`): the image decodes whole, the mask
is an index mask of the image's displayed size with values inside the class list; labels derived from the mask."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..models.cpfcte.metrics import IGNORE_INDEX
from ..models.cpfcte.visualization import as_displayed, exif_orientation


# Mask modes that hold one index per pixel. RGB masks (colour-coded) are rejected: see `inspect_record`.
INDEX_MASK_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L")


def _open_source(source):
    """A path, or a `datasets.Image(decode=False)` value `{"bytes", "path"}` -> something `Image.open` reads."""
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            return io.BytesIO(source["bytes"])
        return source["path"]
    return source


def describe_source(source) -> str:
    if isinstance(source, dict):
        return source.get("path") or "<embedded bytes>"
    return str(source)


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """`(width, height)` as displayed: orientations 5..8 (a quarter turn) swap the stored sides.

    The one orientation rule of the package: images and masks are used as displayed (`ImageOps.exif_transpose`,
    which is what `datasets.Image` and `transformers.image_utils.load_image` apply when decoding).
    """
    width, height = image.size
    return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def _decode_image(path) -> tuple[int, int]:
    """Decodes the whole file (a truncated or corrupt file raises here) and returns its displayed `(width, height)`."""
    with Image.open(_open_source(path)) as image:
        size = displayed_size(image)
        if image.format == "JPEG":
            # DCT-domain downscaling still reads every byte of the entropy-coded data (so truncation is caught)
            # and is several times faster than a full decode.
            image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        image.load()
        from ..models.cpfcte.image_processing_cpfcte import to_rgb_array

        to_rgb_array(image)  # every mode the transforms will meet must convert
    return size


def read_index_mask(path) -> np.ndarray:
    """A single-channel index mask as an `(H, W)` array, as displayed (EXIF orientation applied); raises
    `ValueError` for a colour-coded (RGB) mask."""
    with Image.open(_open_source(path)) as mask:
        mask.load()
        if mask.mode not in INDEX_MASK_MODES:
            raise ValueError(
                f"mask mode {mask.mode} is not an index mask: save class ids as a palette ('P') or grey ('L') PNG"
            )
        return np.asarray(as_displayed(mask))


def inspect_record(record: dict, num_classes: int) -> tuple[list[int], str | None]:
    """Validates one record; returns `(labels, error)` where `error` is None for a usable item."""
    try:
        width, height = _decode_image(record["image"])
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files
        return [], f"unreadable image: {describe_source(record['image'])}: {type(error).__name__}: {error}"
    labels = record.get("labels")
    if record.get("mask") is not None:
        try:
            mask = read_index_mask(record["mask"])
        except Exception as error:  # noqa: BLE001
            return [], f"unreadable mask: {describe_source(record['mask'])}: {error}"
        if mask.shape[:2] != (height, width):
            return [], (
                f"mask size differs from image: {describe_source(record['mask'])} is {mask.shape[1]}x{mask.shape[0]}, "
                f"{describe_source(record['image'])} is {width}x{height}"
            )
        values = np.unique(mask)
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if bad.size or (values < 0).any():
            return [], (
                f"mask values outside 0..{num_classes - 1} and {IGNORE_INDEX}: {describe_source(record['mask'])} has "
                f"{sorted(int(v) for v in values if v < 0 or (v >= num_classes and v != IGNORE_INDEX))[:10]}"
            )
        if labels is None:
            labels = [int(v) for v in values if v != IGNORE_INDEX]
    if labels is None:
        return [], f"no labels and no mask for {record['id']}"
    bad_labels = [label for label in labels if not 0 <= int(label) < num_classes]
    if bad_labels:
        return [], f"label ids outside 0..{num_classes - 1} for {record['id']}: {bad_labels}"
    return sorted({0, *(int(label) for label in labels)}), None


__all__ = ["INDEX_MASK_MODES", "describe_source", "displayed_size", "inspect_record", "read_index_mask"]
