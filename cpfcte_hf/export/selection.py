# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Which images of a labelled output an export takes (see `records`): the split loaded again, every image sorted into
exported or left out by the run's own accounting (`select_images`), and every exported mask read once
(`scan_masks`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data._common import displayed_size
from ..evaluation.html_report.records import SUMMARY_FILE
from ..models.cpfcte.metrics import IGNORE_INDEX
from ..models.cpfcte.visualization import read_mask
from ..prediction.sources import ContentRecord, DatasetSources, keyed_content, same_content
from .labelled import ExportError, ExportImage, LabelledOutput, Selection


IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


def load_labelled_split(labelled: LabelledOutput, options: dict | None = None):
    """
    The split the masks were made from, loaded as the labelling run loaded it (`cpfcte_hf.data`): the recorded (or
    given) dataset, data root and split, with the loader `options` (`--dataset_option`). A folder of own photos is
    read with the run's class names, its output folders left out of the untagged files.

    Raises:
        ExportError: no dataset recorded or given; the loader's own error (missing folder, split file, tags).
    """
    from ..data import check_dataset, load_split

    if not labelled.dataset:
        raise ExportError(f"{labelled.directory / SUMMARY_FILE}: the run recorded no dataset; pass --dataset.")
    options = dict(options or {})
    if labelled.dataset == "tagged":
        options.setdefault("class_names", labelled.class_names)
        options.setdefault("exclude", [labelled.directory])
    try:
        check_dataset(labelled.dataset, labelled.data_root, labelled.split, **options)
        dataset = load_split(labelled.dataset, labelled.data_root, labelled.split, **options)
    except (OSError, ValueError) as error:
        raise ExportError(
            f"The split of {labelled.directory} ({labelled.dataset}, {labelled.split}): {error}"
        ) from None
    if not hasattr(dataset, "column_names") or "image" not in dataset.column_names or "id" not in dataset.column_names:
        raise ExportError(f"The split of {labelled.directory} has no `image` and `id` columns.")
    return dataset


def _current_inputs(labelled: LabelledOutput, dataset, ids: Sequence[str]) -> dict | None:
    """The per-image inputs a stage-1 mask depends on besides its image (the tags, as model class ids), as the
    labelling job recorded them in `sources.json`; `None` when it recorded none (no label masking, stage 2)."""
    if labelled.stage != "pseudo_labels" or not labelled.fingerprint.get("use_image_labels"):
        return None
    from ..models.cpfcte.class_names import dataset_class_names, map_class_names
    from ..prediction.pseudo_labels import _image_labels

    try:
        mapping = map_class_names(dataset_class_names(dataset, labelled.id2label), labelled.class_names)
    except ValueError as error:
        raise ExportError(
            f"The split's classes do not fit the classes of {labelled.directory / SUMMARY_FILE}: {error}"
        ) from None
    return _image_labels(dataset, mapping, ids, True)


def select_images(labelled: LabelledOutput, dataset, rejected: set[str] = frozenset()) -> Selection:
    """
    Sorts every image of `dataset` (the split as loaded now) into exported or left out, by the labelling run's
    accounting: failed when labelled, no mask, no record of the image its mask was made from, changed since (the
    image's bytes or its tags differ from `sources.json`'s record), or in `rejected`. Images the loader skips now or
    skipped when labelling are listed as skipped by the loader.
    """
    from ..data import loader_report

    ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]
    failures = {str(f.get("id")): f for f in labelled.summary.get("failures", [])}
    recorded = ContentRecord(labelled.directory).load()
    inputs = _current_inputs(labelled, dataset, ids)
    sources = DatasetSources(dataset)
    images, left_out = [], []

    def leave_out(image_id: str, reason: str, detail: str = "") -> None:
        left_out.append({"id": image_id, "reason": reason, "detail": detail})

    for index, image_id in enumerate(ids):
        mask_path = labelled.mask_dir / f"{image_id}.png"
        if image_id in failures:
            failure = failures[image_id]
            leave_out(image_id, "failed", f"{failure.get('stage')}: {failure.get('error')}")
            continue
        if not mask_path.is_file():
            leave_out(image_id, "no_mask", str(mask_path))
            continue
        if image_id not in recorded:
            leave_out(image_id, "not_recorded")
            continue
        try:
            source = sources(index)
            key = keyed_content(source, None if inputs is None else inputs.get(image_id), recorded[image_id])
        except (OSError, ValueError) as error:
            leave_out(image_id, "changed", f"cannot be read now: {error}")
            continue
        if not same_content(key, recorded[image_id]):
            leave_out(image_id, "changed")
            continue
        if image_id in rejected:
            leave_out(image_id, "rejected")
            continue
        images.append(ExportImage(image_id, index, source, mask_path))
    present = set(ids)
    skipped = {str(s.get("id")): s for s in labelled.summary.get("skipped", [])}
    skipped.update({str(s.get("id")): s for s in loader_report(dataset)["skipped"]})
    for image_id, entry in skipped.items():
        if image_id not in present:
            leave_out(image_id, "skipped_by_loader", str(entry.get("reason", "")))
    return Selection(labelled, images, left_out)


# ------------------------------------------------------------------------------------------------ the masks


def scan_masks(selection: Selection, progress=None) -> Selection:
    """
    Reads every exported mask once: its classes (`ExportImage.classes`), the image's size and format. A mask whose
    size differs from its image's is left out (counted); a value that is no class id and not 255 (ignore) is an
    `ExportError` naming the mask file and the class list. `progress`: a tqdm bar updated per image.
    """
    labelled, kept = selection.labelled, []
    for item in selection.images:
        try:
            mask = read_mask(item.mask_path)
        except (OSError, ValueError) as error:
            raise ExportError(f"{item.mask_path}: not a readable mask ({error}).") from None
        values = np.unique(mask)
        beyond = [int(v) for v in values if v >= labelled.num_classes and v != IGNORE_INDEX]
        if beyond:
            raise ExportError(
                f"{item.mask_path}: value {beyond[0]} is beyond the {labelled.num_classes} classes of "
                f"{labelled.directory / SUMMARY_FILE} (ids 0-{labelled.num_classes - 1}, 255 = ignore): the class "
                "list disagrees with the masks."
            )
        with Image.open(item.source.path or io.BytesIO(item.image_bytes())) as image:
            item.width, item.height = displayed_size(image)
            # The image's own extension when it is a file, else its format's: the COCO export copies its bytes.
            suffix = Path(item.source.path).suffix.lower() if item.source.path else ""
            item.extension = suffix or IMAGE_EXTENSIONS.get(image.format or "", ".png")
        if (item.height, item.width) != mask.shape:
            selection.left_out.append(
                {
                    "id": item.id,
                    "reason": "size_mismatch",
                    "detail": f"image {item.width}x{item.height}, mask {mask.shape[1]}x{mask.shape[0]}",
                }
            )
        else:
            item.classes = [int(v) for v in values if v != IGNORE_INDEX]
            kept.append(item)
        if progress is not None:
            progress.update(1)
    selection.images = kept
    return selection


__all__ = ["load_labelled_split", "scan_masks", "select_images"]
