# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Class identity by name: the one rule that maps tags and dataset class lists onto a model's `id2label`.

A class is known by its name, compared after `normalize_class_name` (surrounding white space removed,
case-insensitive): `"Disc"`, `" disc "` and `"disc"` are the same class everywhere (the tagged-folder loader, the
pipelines, pseudo-labelling). Class 0 is the background in every class list of this package, whatever it is called.

This module imports nothing from the package (the pipeline file that imports it is copied next to saved weights and
loaded with `trust_remote_code=True` without the package).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


# The PASCAL VOC classes, background first: what the VOC loader names. The model files keep their own copy (remote
# code imports nothing of the package); tests/test_deeplab_modeling.py checks that the copies agree.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


BACKGROUND = "background"


def normalize_class_name(name) -> str:
    """The key a class name is compared by: white space trimmed, case folded (`" Disc "` -> `"disc"`)."""
    return str(name).strip().casefold()


def names_of(classes) -> list[str]:
    """Class names in id order from a list of names, an `id2label` mapping, or a model config / model."""
    config = getattr(classes, "config", classes)
    if hasattr(config, "id2label"):
        classes = config.id2label
    if isinstance(classes, Mapping):
        ids = sorted(int(i) for i in classes)
        if ids != list(range(len(ids))):
            raise ValueError(f"id2label must have the ids 0..{len(ids) - 1}, got {ids}.")
        by_id = {int(i): str(name) for i, name in classes.items()}
        return [by_id[i] for i in ids]
    return [str(name) for name in classes]


def dataset_class_names(dataset, fallback=None) -> list[str]:
    """Class names (background first) of a dataset of this package's schema: its `labels` ClassLabel names (the
    first split of a `DatasetDict`), else `fallback` (an `id2label`, a config or a model)."""
    if isinstance(dataset, Mapping) and not hasattr(dataset, "features"):
        dataset = next(iter(dataset.values()))
    features = getattr(dataset, "features", None) or {}
    names = getattr(getattr(features.get("labels"), "feature", None), "names", None)
    if names:
        return list(names)
    if fallback is not None:
        return names_of(fallback)
    raise ValueError("The dataset has no `labels` ClassLabel names; pass `class_names`.")


def class_index(names: Sequence[str]) -> dict[str, int]:
    """`{normalized name: id}`; raises `ValueError` if two names normalise to the same key."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        key = normalize_class_name(name)
        if key in index:
            raise ValueError(
                f"Class names {names[index[key]]!r} (id {index[key]}) and {name!r} (id {i}) are the same class "
                "once case and surrounding spaces are ignored."
            )
        index[key] = i
    return index


def class_ids_from_tags(tags, id2label, where: str | None = None, allow_ids: bool = True) -> list[int]:
    """
    Image-level tags -> sorted class ids of the model, background (0) always included.

    `tags` is a class name, a class id, or an iterable of them (mixed is fine). Names are matched by
    `normalize_class_name`; ids (ints or digit strings) only with `allow_ids`.

    Raises:
        ValueError: a tag names no class of the model; the message names `where` (e.g. "tags.csv, line 4"), the
            tag, and lists the model's class names.
    """
    if tags is None:
        raise ValueError("No tags given.")
    if isinstance(tags, (str, int, np.integer)):
        tags = [tags]
    names = names_of(id2label)
    index = class_index(names)
    ids, unknown = {0}, []
    for tag in tags:
        if isinstance(tag, (bool, np.bool_)):
            unknown.append(tag)
        elif isinstance(tag, str) and normalize_class_name(tag) in index:
            ids.add(index[normalize_class_name(tag)])
        elif allow_ids and (isinstance(tag, (int, np.integer)) or (isinstance(tag, str) and tag.strip().isdigit())):
            if 0 <= int(tag) < len(names):
                ids.add(int(tag))
            else:
                unknown.append(tag)
        else:
            unknown.append(tag)
    if unknown:
        valid = f"the class names {names}" + (f" or ids 0..{len(names) - 1}" if allow_ids else "")
        message = f"nknown class tag(s) {unknown!r}. Valid tags are {valid} (case and surrounding spaces are ignored)."
        raise ValueError(f"{where}: u{message}" if where else f"U{message}")
    return sorted(ids)


def tag_class_names(tag_lists: Iterable[Iterable[str]], class_names=None) -> tuple[str, ...]:
    """
    The class list (background first) that string tags are matched against.

    `class_names` None: `background` + the tags' classes sorted by `normalize_class_name`, each spelled as first seen
    (a tag `background` is the class 0). A list of names: as given, `background` prepended unless its first name is
    the background. A model, config or `id2label`: its names (class 0 is the background, whatever it is called).
    """
    if class_names is None:
        spellings: dict[str, str] = {}
        for tags in tag_lists:
            for tag in tags:
                spellings.setdefault(normalize_class_name(tag), str(tag).strip())
        spellings.pop(normalize_class_name(BACKGROUND), None)
        return (BACKGROUND, *(spellings[key] for key in sorted(spellings)))
    if isinstance(class_names, (list, tuple)):
        names = tuple(str(name) for name in class_names)
        if names and normalize_class_name(names[0]) == normalize_class_name(BACKGROUND):
            return names
        return (BACKGROUND, *names)
    return tuple(names_of(class_names))


def foreground_tags(tags: Iterable[str]) -> list[str]:
    """`tags` without the ones naming the background (always class 0, so a tag `background` says nothing)."""
    return [tag for tag in tags if normalize_class_name(tag) != normalize_class_name(BACKGROUND)]


def map_class_names(source_names: Sequence[str], target, source: str = "the dataset") -> list[int]:
    """
    Maps a class list (a dataset's) onto a model's classes by name: returns `mapping[source id] = target id`.

    Id 0 (background) maps to 0 whatever it is called. Lists in the same order give the identity; a subset or another
    order is mapped by name.

    Raises:
        ValueError: a class of `source_names` is not a class of `target`; the message lists both and says what to do.
    """
    source_names = [str(name) for name in source_names]
    target_names = names_of(target)
    index = class_index(target_names)
    class_index(source_names)  # a dataset with two spellings of one class is refused too
    mapping, unknown = [0], []
    for name in source_names[1:]:
        key = normalize_class_name(name)
        if key in index and index[key] != 0:
            mapping.append(index[key])
        else:
            unknown.append(name)
            mapping.append(-1)
    if unknown:
        raise ValueError(
            f"Classes {unknown} of {source} are not classes of the model, which knows {target_names}. Classes are "
            "matched by name (case and surrounding spaces ignored): rename or drop those tags/classes (for a tagged "
            "folder, leave out class_names= and the model's names are used), or use a model trained on them."
        )
    return mapping


def mapping_is_identity(mapping: Iterable[int]) -> bool:
    return all(int(target) == i for i, target in enumerate(mapping))


__all__ = [
    "BACKGROUND",
    "class_ids_from_tags",
    "class_index",
    "dataset_class_names",
    "foreground_tags",
    "map_class_names",
    "mapping_is_identity",
    "names_of",
    "normalize_class_name",
    "tag_class_names",
]
