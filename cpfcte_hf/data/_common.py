# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Shared machinery of the loaders: id checks, build-time validation, the Arrow cache, PNG writing.

Every on-disk loader (VOC, COCO, tagged folder) turns its layout into a list of *records*
`{"id", "image": path, "mask": path | None, "labels": [class ids] | None}` and hands them to
`build_from_records`, which

1. fingerprints the files the records name (path, size, mtime in ns) and puts that fingerprint into the
   `gen_kwargs` of `datasets.Dataset.from_generator`, so that a second load of unchanged files is served from
   the Arrow cache and any change (a file added to a split, removed, or rewritten) builds a new cache;
2. decodes every image and mask once, at build time (`_validation.inspect_record`), so that a bad file is found
   here and not in a DataLoader worker hours into training; a bad item is skipped, and all skipped items are
   reported in one warning, also when the dataset comes from the cache (the reasons are stored in the cache next
   to the rows);
3. derives image-level labels from the mask where no labels are given.

Images are stored as paths (the cache is small, and files are decoded lazily by `datasets.Image`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..models.cpfcte.metrics import IGNORE_INDEX
from ..utils.lazy import lazy_module
from ._validation import (  # noqa: F401 - INDEX_MASK_MODES, displayed_size, read_index_mask: importable here too
    INDEX_MASK_MODES,
    describe_source,
    displayed_size,
    inspect_record,
    read_index_mask,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


logger = logging.getLogger(__name__)

BACKGROUND = "background"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Bumped whenever the rows written by `_generate_rows` change meaning, so that old caches are not reused.
CACHE_VERSION = "cpfcte-data-1"
ERROR_COLUMN = "_error"
# Errors with this prefix are filtering by policy (e.g. background-only images on COCO), reported at INFO level.
POLICY_PREFIX = "policy: "
# Attribute of a loaded `datasets.Dataset` holding what the loader left out (see `loader_report`).
LOADER_REPORT_ATTRIBUTE = "_cpfcte_loader_report"


# ----------------------------------------------------------------------------------------------------------------
# ids, split lists, class lists
# ----------------------------------------------------------------------------------------------------------------


def check_relative_id(item_id: str, source: str) -> str:
    """Returns `item_id` if it is a safe relative name; raises `ValueError` naming `source` otherwise.

    An id ends up inside `os.path.join(root, ...)`: an absolute path or a `..` component would read files outside
    the dataset root (a wrong split file, or a hostile one), so both are rejected.
    """
    if not item_id:
        raise ValueError(f"Empty id in {source}.")
    normalized = item_id.replace("\\", "/")
    if os.path.isabs(item_id) or normalized.startswith("/") or (len(item_id) > 1 and item_id[1] == ":"):
        raise ValueError(f"Id {item_id!r} in {source} is an absolute path; ids must be relative to the dataset root.")
    if ".." in normalized.split("/"):
        raise ValueError(f"Id {item_id!r} in {source} contains '..'; ids must stay inside the dataset root.")
    return item_id


def read_id_list(path: str) -> list[str]:
    """Ids from a split file: one id per line; blank lines and `#` comments are skipped.

    Also reads the DeepLab-style list format `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`, where the id is
    the file name of the first column without its extension. Every id goes through `check_relative_id`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Split file not found: {path}")
    ids = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tokens = line.split()
            token = tokens[0]
            if len(tokens) == 2 and os.path.splitext(token)[1].lower() in IMAGE_EXTENSIONS:
                token = os.path.splitext(os.path.basename(token))[0]
            ids.append(check_relative_id(token, f"{path}, line {number}"))
    if not ids:
        raise ValueError(f"Split file {path} lists no ids.")
    return ids


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names from a text file, one per line, class 0 (background) first."""
    with open(path, encoding="utf-8") as handle:
        names = tuple(line.strip() for line in handle if line.strip())
    return check_class_names(names, path)


def check_class_names(names: Sequence[str], source: str = "class_names") -> tuple[str, ...]:
    names = tuple(str(name) for name in names)
    if len(names) < 2:
        raise ValueError(f"{source} must name the background and at least one class, got {list(names)}.")
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        raise ValueError(f"{source} names a class twice: {duplicates}.")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{source} has {len(names)} classes; at most {IGNORE_INDEX} fit next to the ignore index.")
    return names


def find_file(directory: str, stem: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> str | None:
    """`directory/stem<ext>` for the first extension that exists (lower or upper case), else None."""
    for extension in extensions:
        for candidate in (extension, extension.upper()):
            path = os.path.join(directory, stem + candidate)
            if os.path.isfile(path):
                return path
    return None


def load_cls_labels(path: str, num_classes: int) -> dict[str, list[int]]:
    """AFA/ToCo `cls_labels_onehot.npy`: a pickled dict id -> float[C-1] (no background) -> id -> class ids.

    A vector of length C (background included) is accepted too. Class 0 is always added.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class label file not found: {path}")
    try:
        table = np.load(path, allow_pickle=True)
        table = table.item() if table.dtype == object and table.shape == () else table
    except Exception as error:  # noqa: BLE001 - any failure here means "not the expected file"
        raise ValueError(f"Cannot read {path} as a pickled dict id -> one-hot vector: {error}") from error
    if not isinstance(table, dict):
        raise ValueError(f"{path} must hold a dict id -> one-hot vector, got {type(table).__name__}.")
    labels = {}
    for key, vector in table.items():
        vector = np.asarray(vector).reshape(-1)
        if vector.size == num_classes - 1:
            ids = np.flatnonzero(vector > 0.5) + 1
        elif vector.size == num_classes:
            ids = np.flatnonzero(vector > 0.5)
        else:
            raise ValueError(
                f"{path}: the vector for {key!r} has {vector.size} entries; expected {num_classes - 1} "
                f"(foreground classes) or {num_classes}."
            )
        labels[str(key)] = sorted({0, *(int(i) for i in ids)})
    return labels


# ----------------------------------------------------------------------------------------------------------------
# features, fingerprint, build
# ----------------------------------------------------------------------------------------------------------------


def _generate_rows(records, num_classes, with_mask, drop_background_only, fingerprint, version):
    # `fingerprint` and `version` are unused here: they are part of the cache key (the generator's kwargs).
    for record in records:
        labels, error = inspect_record(record, num_classes)
        if error is None and drop_background_only and len(labels) < 2:
            error = f"{POLICY_PREFIX}background-only image (drop_background_only=True): {record['image']}"
        row = {"image": record["image"], "labels": labels, "id": record["id"], ERROR_COLUMN: error}
        if with_mask:
            row["mask"] = record.get("mask")
        yield row


def make_features(class_names: Sequence[str], with_mask: bool) -> datasets.Features:
    """The schema every loader returns: `image`, `mask` (when masks exist), `labels`, `id`."""
    features = {"image": datasets.Image()}
    if with_mask:
        features["mask"] = datasets.Image()
    features["labels"] = datasets.List(datasets.ClassLabel(names=list(class_names)))
    features["id"] = datasets.Value("string")
    return datasets.Features(features)


def files_fingerprint(paths: Sequence[str]) -> str:
    """sha256 over (path, size, mtime_ns) of every file: a changed, added or removed file changes the result."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def require_files(records: Sequence[dict], kind: str = "image") -> None:
    """Raises `FileNotFoundError` naming the first missing file of the given kind."""
    for record in records:
        if not os.path.isfile(record[kind]):
            raise FileNotFoundError(f"{kind.capitalize()} not found for id {record['id']!r}: {record[kind]}")


def build_from_records(
    records: list[dict],
    class_names: Sequence[str],
    *,
    with_mask: bool,
    source: str,
    split: str = "train",
    cache_dir: str | None = None,
    num_proc: int | None = None,
    drop_background_only: bool = False,
    extra_files: Sequence[str] = (),
) -> datasets.Dataset:
    """Records -> validated, cached `datasets.Dataset` (see the module docstring).

    `extra_files` (split lists, label files, class lists) are part of the fingerprint too.
    """
    class_names = check_class_names(class_names, source)
    if not records:
        raise ValueError(f"No images listed for {source}.")
    require_files(records, "image")
    paths = [*extra_files]
    for record in records:
        paths.append(record["image"])
        if record.get("mask") is not None:
            paths.append(record["mask"])
    fingerprint = files_fingerprint(paths)
    features = make_features(class_names, with_mask)
    build_features = datasets.Features({**features, ERROR_COLUMN: datasets.Value("string")})
    records = [
        {
            "id": str(r["id"]),
            "image": os.path.abspath(r["image"]),
            "mask": os.path.abspath(r["mask"]) if r.get("mask") else None,
            "labels": None if r.get("labels") is None else [int(x) for x in r["labels"]],
        }
        for r in records
    ]
    dataset = datasets.Dataset.from_generator(
        _generate_rows,
        features=build_features,
        cache_dir=cache_dir,
        num_proc=num_proc if num_proc and num_proc > 1 and len(records) > 1 else None,
        split=datasets.NamedSplit(re.sub(r"\W+", "_", split) or "train"),
        gen_kwargs=dict(
            records=records,
            num_classes=len(class_names),
            with_mask=with_mask,
            drop_background_only=bool(drop_background_only),
            fingerprint=fingerprint,
            version=CACHE_VERSION,
        ),
    )
    return drop_failed_rows(dataset, source)


def attach_loader_report(dataset, skipped: Sequence[dict] | None = None, untagged: Sequence[str] | None = None):
    """Records on `dataset` (in place; returned) what its loader left out: see `loader_report`."""
    report = loader_report(dataset)
    if skipped is not None:
        report["skipped"] = [dict(item) for item in skipped]
    if untagged is not None:
        report["untagged"] = list(untagged)
    setattr(dataset, LOADER_REPORT_ATTRIBUTE, report)
    return dataset


def loader_report(dataset) -> dict:
    """What the loader of `dataset` left out: `{"skipped": [{"id", "image", "reason"}], "untagged": [file names]}`.

    `skipped`: items dropped at build time (unreadable or truncated image, mask of another size, policy such as
    `drop_background_only`); `untagged`: image files of a tagged folder without a row in the tag file. Both are empty
    for a dataset that did not come straight from a loader of this package (a `select`, `map` or `with_transform`
    returns a new object without the record).
    """
    report = getattr(dataset, LOADER_REPORT_ATTRIBUTE, None) or {}
    return {"skipped": list(report.get("skipped", [])), "untagged": list(report.get("untagged", []))}


def drop_failed_rows(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    """Removes the rows whose `_error` is set, reports them (one warning; `loader_report` lists them), and drops
    the `_error` column."""
    errors = dataset.data.column(ERROR_COLUMN).to_pylist()
    keep = [i for i, error in enumerate(errors) if error is None]
    problems = [error for error in errors if error is not None and not error.startswith(POLICY_PREFIX)]
    policy = [error for error in errors if error is not None and error.startswith(POLICY_PREFIX)]
    if policy:
        logger.info("%s: left out %d of %d images by policy, e.g. %s", source, len(policy), len(errors), policy[0])
    if problems:
        warnings.warn(summarize_problems(problems, len(errors), source), UserWarning, stacklevel=3)
    if not keep:
        raise ValueError(
            f"No usable images in {source}: every one of the {len(errors)} items was left out.\n"
            + summarize_problems(problems + policy, len(errors), source)
        )
    skipped = []
    if len(keep) < len(errors):
        failed = [i for i, error in enumerate(errors) if error is not None]
        ids = dataset.data.column("id").take(failed).to_pylist()
        images = dataset.data.column("image").take(failed).to_pylist()
        skipped = [
            {"id": str(item_id), "image": describe_source(image), "reason": errors[i]}
            for i, item_id, image in zip(failed, ids, images)
        ]
        dataset = dataset.select(keep, keep_in_memory=True)
    return attach_loader_report(dataset.remove_columns(ERROR_COLUMN), skipped=skipped)


def summarize_problems(problems: Sequence[str], total: int, source: str, show: int = 5) -> str:
    kinds = Counter(problem.split(":", 1)[0] for problem in problems)
    counts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    listing = "\n".join(f"  - {problem}" for problem in problems[:show])
    more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
    return f"Skipped {len(problems)} of {total} items in {source} ({counts}):\n{listing}{more}"


# ----------------------------------------------------------------------------------------------------------------
# writing masks
# ----------------------------------------------------------------------------------------------------------------


def as_splits(split) -> tuple[list[str], bool]:
    """`"train"` -> (["train"], False); `["train", "val"]` -> (["train", "val"], True)."""
    if isinstance(split, str):
        return [split], False
    splits = list(split)
    if not splits:
        raise ValueError("No split given.")
    return splits, True


def check_root(root) -> str:
    if root is None:
        raise ValueError("A dataset root directory is required.")
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Dataset root not found: {root}")
    return root
