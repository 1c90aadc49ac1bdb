# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Data for CPF-CTE: loaders that return `datasets` objects, the training/eval transforms and the collator.

Every loader returns a `datasets.Dataset` (one split) or `datasets.DatasetDict` (several) with the columns

    image   datasets.Image
    mask    datasets.Image of class ids, 255 = ignore          (only where the source has masks)
    labels  List(ClassLabel(names=[background, ...]))          class ids; background 0 always present
    id      string

Class names: `ds.features["labels"].feature.names` (background first); C = `...feature.num_classes`.

Sources: `load_voc` (VOC 2012 + SBD, and anything in that layout, e.g. `scripts/make_shapes.py` output),
`load_coco` (ToCo layout or official instances JSON), `load_tagged_images` (folder + CSV/JSON tags, no masks),
`load_hub_dataset` (Hub or local parquet), `load_shapes` (procedural, in memory). `build_dataset(name, ...)`
picks one by name, for scripts whose dataset is an argument.

Typical use::

    ds = build_dataset("voc", root="data/VOCdevkit", split="train_aug")
    C = ds.features["labels"].feature.num_classes
    train = ds.with_transform(TrainTransform(C, image_processor))
    loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=2, collate_fn=WeakSegmentationCollator())
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..models.cpfcte.class_names import dataset_class_names
from ._common import loader_report
from .coco import COCO_CLASSES, check_coco, load_coco, paint_coco_masks
from .hub import check_hub_dataset, load_hub_dataset
from .shapes import SHAPE_NAMES, ShapesConfig, load_shapes, make_shapes_dataset, render_shapes_sample, write_shapes_voc
from .tagged import check_tagged_images, load_tagged_images, read_tag_file
from .voc import check_voc, find_voc_dir, load_voc


if TYPE_CHECKING:
    import datasets


def _build_voc(root=None, split="train_aug", **kwargs):
    return load_voc(root, split, **kwargs)


def _build_coco(root=None, split="train", **kwargs):
    return load_coco(root, split, **kwargs)


_SHAPES_WRITE_OPTIONS = {"num_train", "num_val", "config", *(f.name for f in dataclasses.fields(ShapesConfig))}


def _build_shapes(root=None, split="train", **kwargs):
    if root is None:
        return load_shapes(split, **kwargs)
    # A folder: generation options (num_train=, image_size=, ...) write the set there first (idempotent: files with
    # the same bytes are left alone); it is then read like VOC, as a folder made by scripts/make_shapes.py.
    generation = {k: kwargs.pop(k) for k in list(kwargs) if k in _SHAPES_WRITE_OPTIONS}
    kwargs.pop("num_test", None)
    if generation or not os.path.isdir(os.path.join(root, "JPEGImages")):
        write_shapes_voc(root, **generation)
    return load_voc(root, split, **kwargs)


def _build_tagged(root=None, split="train", **kwargs):
    return load_tagged_images(root, split=split, **kwargs)


def _build_hub(root=None, split="train", **kwargs):
    check_hub_dataset(root)
    return load_hub_dataset(root, split, **kwargs)


DATASET_BUILDERS: dict[str, Callable] = {
    "voc": _build_voc,
    "coco": _build_coco,
    "shapes": _build_shapes,
    "tagged": _build_tagged,
    "hub": _build_hub,
}


def build_dataset(
    name: str, root: str | None = None, split="train", **kwargs
) -> datasets.Dataset | datasets.DatasetDict:
    """Builds a dataset by source name, for scripts that take "the dataset" as an argument.

    Args:
        name: `"voc"`, `"coco"`, `"shapes"`, `"tagged"` or `"hub"`.
        root: the dataset folder (VOC/COCO/tagged), a Hub id or parquet path (hub). For `"shapes"`: None generates
            the set in memory (`load_shapes`); a folder is read through `load_voc` (the layout of
            `scripts/make_shapes.py`), after writing the set there if generation options (`num_train=`,
            `image_size=`, `seed=`, ...) are given or the folder holds no `JPEGImages/` yet.
        split: a split name or a list of them. For shapes, `"train_aug"` is the train split.
        **kwargs: passed to the loader (`cache_dir=`, `class_names=`, `num_train=`, `image_size=`, ...).

    Example:
        >>> ds = build_dataset("shapes", split="train", num_train=64, image_size=64)
        >>> ds.features["labels"].feature.names[:3]
        ['background', 'disc', 'square']
    """
    if name not in DATASET_BUILDERS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASET_BUILDERS)}.")
    return DATASET_BUILDERS[name](root=root, split=split, **kwargs)


def _check_shapes(root=None, split="train", **kwargs) -> None:
    # In memory, or a folder written first (see `_build_shapes`): only a folder that is read as it is can be wrong.
    generation = {key for key in kwargs if key in _SHAPES_WRITE_OPTIONS}
    if root is not None and not generation and os.path.isdir(os.path.join(root, "JPEGImages")):
        check_voc(root, split, **kwargs)


DATASET_CHECKS: dict[str, Callable] = {
    "voc": check_voc,
    "coco": check_coco,
    "shapes": _check_shapes,
    "tagged": lambda root=None, split="train", **kwargs: check_tagged_images(root, **kwargs),
    "hub": lambda root=None, split="train", **kwargs: check_hub_dataset(root),
}
# Loader options that are not parameters of the loader function (`build_dataset` passes them on, or consumes them).
_BUILDER_OPTIONS = {"shapes": {*_SHAPES_WRITE_OPTIONS, "num_test"}}
DATASET_LOADERS: dict[str, Callable] = {
    "voc": load_voc,
    "coco": load_coco,
    "shapes": load_shapes,
    "tagged": load_tagged_images,
    "hub": load_hub_dataset,
}


def check_dataset(name: str, root: str | None = None, split="train", **kwargs) -> None:
    """
    Checks what `build_dataset(name, root, split, **kwargs)` reads before its first image: the loader options, the
    root and its layout, the split files and their ids, a tag file and its class names. Raises the loader's own
    errors (`FileNotFoundError` / `ValueError` naming the path, file and line), at the cost of reading a few text
    files: a command calls it before it writes or builds anything. Decoding every image stays the loader's job.
    """
    if name not in DATASET_BUILDERS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASET_BUILDERS)}.")
    parameters = inspect.signature(DATASET_LOADERS[name]).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters) - _BUILDER_OPTIONS.get(name, set()))
        if unknown:
            raise ValueError(
                f"--dataset_option {', '.join(unknown)}: not an option of the {name!r} loader "
                f"({', '.join(sorted(set(parameters) - {'root', 'split', 'image_dir', 'path'}))})."
            )
    DATASET_CHECKS[name](root=root, split=split, **kwargs)


# The transforms and the collator need torch: imported on first use, so that the loaders' checks stay light.
_TRANSFORMS = (
    "AugmentationConfig",
    "EvalTransform",
    "SegmentationAugmentation",
    "TrainTransform",
    "WeakSegmentationCollator",
    "labels_to_multi_hot",
    "resize_mask",
)


def __getattr__(name: str):
    if name in _TRANSFORMS:
        value = getattr(importlib.import_module(".transforms", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_split(dataset: str, data_root: str | os.PathLike | None = None, split: str = "train", **kwargs):
    """`cpfcte_hf.data.build_dataset(name=dataset, root=data_root, split=split, **kwargs)` (see `cpfcte_hf.data`)."""
    return build_dataset(name=dataset, root=data_root, split=split, **kwargs)


def check_single_split(dataset) -> None:
    if isinstance(dataset, Mapping) or not hasattr(dataset, "column_names"):
        raise ValueError(
            f"Expected one split (a datasets.Dataset), got {type(dataset).__name__}"
            + (f" with splits {list(dataset)}" if isinstance(dataset, Mapping) else "")
            + ": pass a single --split."
        )


def class_names_of(dataset) -> list[str]:
    """Class names (background first) of a dataset or dataset dict built by this package."""
    return dataset_class_names(dataset)


__all__ = [
    "COCO_CLASSES",
    "DATASET_BUILDERS",
    "SHAPE_NAMES",
    "AugmentationConfig",
    "EvalTransform",
    "SegmentationAugmentation",
    "ShapesConfig",
    "TrainTransform",
    "WeakSegmentationCollator",
    "build_dataset",
    "check_single_split",
    "check_dataset",
    "class_names_of",
    "find_voc_dir",
    "labels_to_multi_hot",
    "load_coco",
    "load_hub_dataset",
    "load_split",
    "load_shapes",
    "load_tagged_images",
    "load_voc",
    "loader_report",
    "make_shapes_dataset",
    "paint_coco_masks",
    "read_tag_file",
    "render_shapes_sample",
    "resize_mask",
    "write_shapes_voc",
]
