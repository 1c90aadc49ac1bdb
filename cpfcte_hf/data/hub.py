# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Datasets on the Hugging Face Hub, or local parquet / `save_to_disk` folders, mapped onto this package's schema.

`load_hub_dataset(path, split, columns=...)` reads `path` with `datasets.load_dataset` (a Hub repo id, a local
folder, or a `.parquet` file), or with `datasets.load_from_disk` (a folder written by `save_to_disk`), then maps
its columns onto `image`, `mask`, `labels`, `id`.

Column mapping: `columns={"image": <source column>, "labels": ..., "mask": ..., "id": ...}`; a key left out is
looked up among common names:

    image:  image, img, picture, jpg, png                    (must be a datasets `Image`)
    mask:   mask, segmentation, annotation, semantic_segmentation, label_mask, seg   (an `Image`; optional)
    labels: labels, label, tags, classes, objects             (optional when there is a mask)
    id:     id, image_id, file_name, filename, name, key      (optional: the row index otherwise)

`labels` may be any of:

* a `ClassLabel` or a list of `ClassLabel`: names come from the feature; if its class 0 is not a background
  (`background`, `_background_`, `__background__`, `bg`), `background` is prepended and ids shift by 1;
* strings or lists of strings (tag names; a string is split on `;`, `|`, `,`): classes are `class_names=` (a
  list, or a model / its `id2label`) or `background` + the sorted tags; tags and `ClassLabel` names are matched to
  `class_names=` by name with `cpfcte_hf.models.cpfcte.class_names.normalize_class_name` (case-insensitive, trimmed: `Disc` is
  `disc`), and a tag that is no class is a `ValueError` naming the row and the tag and listing the classes;
* integers or lists of integers: indices into `class_names=` (required), shifted by `label_offset` (default 0;
  use 1 when your ids count foreground classes from 0);
* a multi-hot vector of length C (background included) or C - 1 (foreground only); `class_names=` required;
* absent: derived from the mask's values (255 ignored).

Masks must already hold this package's class ids (0 = background, 255 = ignore).
With `validate=True` (default) every image (and mask) is decoded once; unreadable images and bad masks are
dropped with one warning, as for the on-disk loaders. That pass is a `datasets.map`, cached like any other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from ..models.cpfcte.class_names import (
    class_ids_from_tags,
    class_index,
    foreground_tags,
    map_class_names,
    tag_class_names,
)
from ..utils.lazy import lazy_module
from ._common import (
    BACKGROUND,
    ERROR_COLUMN,
    POLICY_PREFIX,
    as_splits,
    attach_loader_report,
    check_class_names,
    drop_failed_rows,
    inspect_record,
    loader_report,
    make_features,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


IMAGE_COLUMNS = ("image", "img", "picture", "jpg", "png")
MASK_COLUMNS = ("mask", "segmentation", "annotation", "semantic_segmentation", "label_mask", "seg")
LABEL_COLUMNS = ("labels", "label", "tags", "classes", "objects")
ID_COLUMNS = ("id", "image_id", "file_name", "filename", "name", "key")
BACKGROUND_NAMES = {"background", "_background_", "__background__", "bg"}


def _is_local(path: str) -> bool:
    return (
        os.path.exists(path)
        or path.startswith((".", "/", "~"))
        or path.endswith(".parquet")
        or os.sep + os.sep in path
    )


def check_hub_dataset(path: str | None, split=None, **_) -> None:
    """What `load_hub_dataset` can check without loading: a source is given, and a local one (folder, parquet file)
    exists. Whether the Hub has a repo id is left to the loader."""
    if path is None:
        raise ValueError("The hub source needs root= a Hub repo id, a local folder or a .parquet file.")
    expanded = os.path.expanduser(path)
    if _is_local(path) and not os.path.exists(expanded):
        raise FileNotFoundError(f"Dataset path not found: {expanded}")


def _load_raw(path, split, *, name, data_files, cache_dir, revision, load_kwargs):
    check_hub_dataset(path)
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded) and os.path.isfile(os.path.join(expanded, "dataset_dict.json")):
        loaded = datasets.load_from_disk(expanded)
        if split not in loaded:
            raise ValueError(f"Split {split!r} not in {expanded}; it has {list(loaded)}.")
        return loaded[split]
    if os.path.isdir(expanded) and os.path.isfile(os.path.join(expanded, "state.json")):
        return datasets.load_from_disk(expanded)
    if os.path.isfile(expanded) and expanded.endswith(".parquet"):
        return datasets.load_dataset("parquet", data_files={split: expanded}, split=split, cache_dir=cache_dir)
    return datasets.load_dataset(
        expanded if os.path.exists(expanded) else path,
        name,
        data_files=data_files,
        split=split,
        cache_dir=cache_dir,
        revision=revision,
        **load_kwargs,
    )


def _resolve_columns(dataset: datasets.Dataset, columns: dict | None) -> dict:
    columns = dict(columns or {})
    unknown = set(columns) - {"image", "mask", "labels", "id"}
    if unknown:
        raise ValueError(f"columns= maps the keys image, mask, labels, id; got {sorted(unknown)}.")
    features = dataset.features
    for key, value in columns.items():
        if value is not None and value not in features:
            raise ValueError(f"Column {value!r} (for {key!r}) is not in the dataset; it has {list(features)}.")

    def is_image(column):
        return isinstance(features[column], datasets.Image)

    lowered = {column.lower(): column for column in features}
    if "image" not in columns:
        columns["image"] = next((lowered[c] for c in IMAGE_COLUMNS if c in lowered and is_image(lowered[c])), None)
        if columns["image"] is None:
            columns["image"] = next((c for c in features if is_image(c)), None)
    if columns["image"] is None:
        raise ValueError(f"No image column found among {list(features)}: pass columns={{'image': ...}}.")
    if "mask" not in columns:
        columns["mask"] = next(
            (
                lowered[c]
                for c in MASK_COLUMNS
                if c in lowered and is_image(lowered[c]) and lowered[c] != columns["image"]
            ),
            None,
        )
    if "labels" not in columns:
        columns["labels"] = next(
            (lowered[c] for c in LABEL_COLUMNS if c in lowered and not is_image(lowered[c])), None
        )
    if "id" not in columns:
        columns["id"] = next(
            (lowered[c] for c in ID_COLUMNS if c in lowered and lowered[c] not in columns.values()), None
        )
    if columns["labels"] is None and columns["mask"] is None:
        raise ValueError(f"No labels or mask column found among {list(features)}: pass columns={{'labels': ...}}.")
    return columns


def _split_tags(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [tag.strip() for tag in re.split(r"[;|,]", value) if tag.strip()]
    return [str(tag).strip() for tag in value if str(tag).strip()]


def _convert_labels(
    values: list, feature, class_names, label_offset, source: str = "the dataset"
) -> tuple[tuple[str, ...], list[list[int]]]:
    """Source label values -> (class names, lists of class ids with background 0).

    String tags and `ClassLabel` names are matched to `class_names` by `cpfcte_hf.models.cpfcte.class_names` (case-insensitive,
    trimmed); an unknown tag is a `ValueError` naming `source`, the row and the tag, and listing the classes.
    """
    inner = feature.feature if isinstance(feature, (datasets.List, datasets.LargeList)) else feature
    as_lists = [[] if v is None else (list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]) for v in values]
    if isinstance(inner, datasets.ClassLabel):
        label_names = list(inner.names)
        shift = 0 if label_names[0].lower() in BACKGROUND_NAMES else 1
        names = (BACKGROUND, *label_names[1:]) if shift == 0 else (BACKGROUND, *label_names)
        if class_names is not None:
            wanted = check_class_names(tag_class_names((), class_names), source)
            remap = map_class_names(names, wanted, source=source)
            return wanted, [[remap[int(i) + shift] for i in ids] for ids in as_lists]
        return names, [[int(i) + shift for i in ids] for ids in as_lists]
    dtype = getattr(inner, "dtype", None)
    if dtype == "string" or dtype == "large_string":
        tag_lists = [_split_tags(v) for v in values]
        names = check_class_names(tag_class_names(tag_lists, class_names), source)
        class_index(names)  # two spellings of one class are refused
        return names, [
            class_ids_from_tags(foreground_tags(tags), names, where=f"{source}, row {row}", allow_ids=False)
            for row, tags in enumerate(tag_lists)
        ]
    if class_names is None:
        raise ValueError("Integer or multi-hot labels carry no class names: pass class_names= (background first).")
    names = check_class_names(class_names)
    if (
        dtype is not None
        and (dtype.startswith("float") or dtype == "bool")
        and isinstance(feature, (datasets.List, datasets.LargeList))
    ):
        lengths = {len(ids) for ids in as_lists}
        if lengths == {len(names)}:
            shift = 0
        elif lengths == {len(names) - 1}:
            shift = 1
        else:
            raise ValueError(
                f"Multi-hot labels of lengths {sorted(lengths)} fit neither {len(names)} nor {len(names) - 1} classes."
            )
        return names, [[i + shift for i, v in enumerate(ids) if float(v) > 0.5] for ids in as_lists]
    shift = int(label_offset or 0)
    return names, [[int(i) + shift for i in ids] for ids in as_lists]


def _validate_batch(batch, *, image_column, mask_column, id_column, num_classes, derive_labels, drop_background_only):
    labels_out, errors = [], []
    for row in range(len(batch[image_column])):
        record = {
            "id": str(batch[id_column][row]),
            "image": batch[image_column][row],
            "mask": batch[mask_column][row] if mask_column else None,
            "labels": None if derive_labels else batch["labels"][row],
        }
        labels, error = inspect_record(record, num_classes)
        if error is None and drop_background_only and len(labels) < 2:
            error = f"{POLICY_PREFIX}background-only image (drop_background_only=True): {record['id']}"
        labels_out.append(labels)
        errors.append(error)
    return {"labels": labels_out, ERROR_COLUMN: errors}


def _prepare_split(dataset, *, columns, class_names, label_offset, validate, drop_background_only, num_proc, source):
    columns = _resolve_columns(dataset, columns)
    image_column, mask_column, labels_column, id_column = (columns[k] for k in ("image", "mask", "labels", "id"))
    if labels_column is not None:
        values = dataset.data.column(labels_column).to_pylist()
        names, labels = _convert_labels(values, dataset.features[labels_column], class_names, label_offset, source)
        labels = [sorted({0, *ids}) for ids in labels]
        derive = False
    else:
        if class_names is None:
            raise ValueError("Labels derived from masks need class_names= (background first).")
        names, labels, derive = check_class_names(class_names), None, True
    keep = [c for c in (image_column, mask_column, id_column) if c is not None]
    dataset = dataset.select_columns(keep)
    rename = {image_column: "image", mask_column: "mask", id_column: "id"}
    dataset = dataset.rename_columns({k: v for k, v in rename.items() if k is not None and k != v})
    if labels is not None:
        dataset = dataset.add_column("labels", labels)
    if "id" not in dataset.column_names:  # the source row index, given before any row is dropped
        dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
    skipped = []
    if validate or derive:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
        if mask_column:
            dataset = dataset.cast_column("mask", datasets.Image(decode=False))
        dataset = dataset.map(
            _validate_batch,
            batched=True,
            batch_size=64,
            num_proc=num_proc,
            fn_kwargs=dict(
                image_column="image",
                mask_column="mask" if mask_column else None,
                id_column="id",
                num_classes=len(names),
                derive_labels=derive,
                drop_background_only=drop_background_only,
            ),
            desc="Checking images",
        )
        dataset = drop_failed_rows(dataset, source)
        skipped = loader_report(dataset)["skipped"]
        dataset = dataset.cast_column("image", datasets.Image())
        if mask_column:
            dataset = dataset.cast_column("mask", datasets.Image())
    elif drop_background_only:
        dataset = dataset.filter(lambda ids: len(ids) > 1, input_columns="labels")
    features = make_features(names, with_mask=bool(mask_column))
    dataset = dataset.select_columns(list(features))
    return attach_loader_report(dataset.cast(features), skipped=skipped)


def load_hub_dataset(
    path: str,
    split: str | Sequence[str] = "train",
    *,
    name: str | None = None,
    data_files=None,
    columns: dict | None = None,
    class_names: Sequence[str] | None = None,
    label_offset: int | None = None,
    validate: bool = True,
    drop_background_only: bool = False,
    cache_dir: str | None = None,
    revision: str | None = None,
    num_proc: int | None = None,
    **load_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """Loads a Hub dataset or local parquet / `save_to_disk` data and maps it onto `image`/`mask`/`labels`/`id`.

    Args:
        path: a Hub repo id (`"user/name"`), a local folder, a `.parquet` file, or a `save_to_disk` folder.
        split: a split name or a list of them (then a `DatasetDict`).
        name, data_files, revision, **load_kwargs: passed to `datasets.load_dataset`.
        columns: `{"image": ..., "mask": ..., "labels": ..., "id": ...}` source column names (see module docstring).
        class_names: the classes, background first (a list, or a model / its `id2label`); needed for integer /
            multi-hot labels and mask-only data; string tags and `ClassLabel` names are matched to them by name.
        label_offset: added to integer label ids (1 when they count foreground classes from 0).
        validate: decode every image/mask once and drop bad rows (one warning).
        drop_background_only: leave out rows whose only label is the background.
        cache_dir: the `datasets` cache folder; num_proc: processes for the validation pass.
    """
    splits, as_dict = as_splits(split)
    result = {}
    for split_name in splits:
        raw = _load_raw(
            path,
            split_name,
            name=name,
            data_files=data_files,
            cache_dir=cache_dir,
            revision=revision,
            load_kwargs=load_kwargs,
        )
        result[split_name] = _prepare_split(
            raw,
            columns=columns,
            class_names=class_names,
            label_offset=label_offset,
            validate=validate,
            drop_background_only=drop_background_only,
            num_proc=num_proc,
            source=f"{path} split {split_name!r}",
        )
    return datasets.DatasetDict(result) if as_dict else next(iter(result.values()))


__all__ = ["check_hub_dataset", "load_hub_dataset"]
