# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Your own images with image-level tags (no masks): a folder of images plus a CSV, JSON or JSON-lines file.

Tag file formats (the file is `tags=`, or the first of `tags.csv`, `tags.json`, `tags.jsonl`, `metadata.csv`,
`metadata.jsonl`, `labels.csv`, `labels.json` found in the image folder):

* CSV with a header: a file column (`file_name`, `filename`, `image`, `file`, `path` or `id`) and
    - a tags column (`tags`, `labels`, `classes` or `label`) holding names separated by `;`, `|` or `,`
      (`separator=` to choose), e.g. `cat_01.jpg,"cat;sofa"`; or
    - one column per class holding 0/1 (`file_name,cat,dog,sofa` / `cat_01.jpg,1,0,1`).
* JSON: `{"cat_01.jpg": ["cat", "sofa"], ...}` or `[{"file_name": "cat_01.jpg", "tags": ["cat", "sofa"]}, ...]`.
* JSON lines (`.jsonl`, as `datasets`' imagefolder `metadata.jsonl`): one `{"file_name": ..., "tags": [...]}` a line.

File names are relative to the image folder (sub-folders, `./`, spaces and non-ASCII names allowed); the id is that
path, normalised (`./cats/01.jpg` -> `cats/01`), without its extension. Class names are `class_names=` (a list, with
background prepended when missing, or a model / its `id2label`: then the label ids are the model's class ids), else
`background` + the sorted set of tags. Tags are matched to class names by `cpfcte_hf.models.cpfcte.class_names.normalize_class_name`
(case-insensitive, trimmed: `Disc` is `disc`). A tag `background` is accepted and ignored: the background is always
class 0.

Bad input: a missing folder, tag file or listed image -> `FileNotFoundError` naming the path; a file name with
`..` or an absolute path, a duplicated file name, two files with the same id (`a.jpg`, `a.png`), a tag that is not a
class (the message lists the classes), a row with tags but no file name, or a tag file in none of the formats above
-> `ValueError` naming the file and line; blank rows (e.g. a trailing `,`) -> skipped and counted in the log; an image
with no tag -> kept as a background-only example (`drop_background_only=True` leaves it out); corrupt images ->
skipped, one warning, listed by `loader_report(dataset)["skipped"]`; odd modes -> converted. Image files in the
folder that the tag file does not list are not loaded: one warning, and `loader_report(dataset)["untagged"]` (the
folders of `exclude=`, such as an output folder of masks inside the image folder, are not searched).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import posixpath
import re
from collections.abc import Sequence

from ..models.cpfcte.class_names import class_ids_from_tags, class_index, foreground_tags, tag_class_names
from ..utils.lazy import lazy_module
from ._common import (
    IMAGE_EXTENSIONS,
    as_splits,
    attach_loader_report,
    build_from_records,
    check_class_names,
    check_relative_id,
    check_root,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


logger = logging.getLogger(__name__)


TAG_FILES = ("tags.csv", "tags.json", "tags.jsonl", "metadata.csv", "metadata.jsonl", "labels.csv", "labels.json")
FILE_COLUMNS = ("file_name", "filename", "image", "file", "path", "id")
TAG_COLUMNS = ("tags", "labels", "classes", "label")
TRUE_VALUES = {"1", "1.0", "true", "yes", "y", "x"}
FALSE_VALUES = {"", "0", "0.0", "false", "no", "n"}


def _split_tags(value, separator: str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(tag).strip() for tag in value if str(tag).strip()]
    pattern = re.escape(separator) if separator else r"[;|,]"
    return [tag.strip() for tag in re.split(pattern, str(value)) if tag.strip()]


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lowered = {column.strip().lower(): column for column in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _read_csv(path: str, separator: str | None) -> list[tuple[str, list[str], str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        file_column = _pick(columns, FILE_COLUMNS)
        if file_column is None:
            raise ValueError(f"{path}: no file column; name one of {list(FILE_COLUMNS)} in the header.")
        tag_column = _pick(columns, TAG_COLUMNS)
        class_columns = [c for c in columns if c != file_column] if tag_column is None else []
        rows = []
        for number, row in enumerate(reader, start=2):
            where = f"{path}, line {number}"
            if tag_column is not None:
                tags = _split_tags(row.get(tag_column), separator)
            else:
                tags = []
                for column in class_columns:
                    value = (row.get(column) or "").strip().lower()
                    if value in TRUE_VALUES:
                        tags.append(column.strip())
                    elif value not in FALSE_VALUES:
                        raise ValueError(f"{where}: column {column!r} must be 0/1, got {row.get(column)!r}.")
            rows.append(((row.get(file_column) or "").strip(), tags, where))
    return rows


def _read_json(path: str, separator: str | None) -> list[tuple[str, list[str], str]]:
    with open(path, encoding="utf-8") as handle:
        if path.lower().endswith(".jsonl"):
            entries = [json.loads(line) for line in handle if line.strip()]
        else:
            entries = json.load(handle)
    if isinstance(entries, dict):
        return [(str(name), _split_tags(tags, separator), f"{path}, key {name!r}") for name, tags in entries.items()]
    if not isinstance(entries, list):
        raise ValueError(
            f"{path}: expected an object file -> tags or a list of objects, got {type(entries).__name__}."
        )
    rows = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, entry {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with a file name and tags.")
        file_key, tag_key = _pick(list(entry), FILE_COLUMNS), _pick(list(entry), TAG_COLUMNS)
        if file_key is None:
            raise ValueError(f"{where}: no file name key; use one of {list(FILE_COLUMNS)}.")
        rows.append(
            (str(entry[file_key]).strip(), _split_tags(entry.get(tag_key) if tag_key else None, separator), where)
        )
    return rows


def read_tag_file(path: str, separator: str | None = None) -> list[tuple[str, list[str], str]]:
    """Rows `(file name, tags, "file, line/entry")` of a CSV, JSON or JSON-lines tag file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Tag file not found: {path}")
    if path.lower().endswith(".csv"):
        return _read_csv(path, separator)
    if path.lower().endswith((".json", ".jsonl")):
        return _read_json(path, separator)
    raise ValueError(f"{path}: tag files must end in .csv, .json or .jsonl.")


def _relative_file_name(file_name: str, where: str) -> str:
    """`./cats\\01.jpg` -> `cats/01.jpg`: the listed name as a clean relative POSIX path (`ValueError` if unsafe)."""
    check_relative_id(file_name, where)
    normalized = posixpath.normpath(file_name.replace("\\", "/"))
    if normalized in ("", "."):
        raise ValueError(f"{where}: {file_name!r} names no file.")
    return check_relative_id(normalized, where)


def _untagged_files(image_dir: str, listed: set[str], tag_file: str, exclude: Sequence = ()) -> list[str]:
    """Image files under `image_dir` that the tag file does not list, relative, sorted. Hidden folders and the
    folders of `exclude` (with everything below them) are not looked into."""
    found = []
    tag_file = os.path.abspath(tag_file)
    if isinstance(exclude, (str, os.PathLike)):
        exclude = [exclude]
    excluded = {os.path.realpath(os.path.expanduser(os.fspath(folder))) for folder in exclude}
    for folder, subfolders, files in os.walk(image_dir):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and os.path.realpath(os.path.join(folder, name)) not in excluded
        )
        for name in files:
            path = os.path.join(folder, name)
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS or os.path.abspath(path) == tag_file:
                continue
            relative = os.path.relpath(path, image_dir).replace(os.sep, "/")
            if relative not in listed:
                found.append(relative)
    return sorted(found)


def _tag_rows(image_dir: str, tags: str | None, separator: str | None) -> tuple[str, str, list]:
    """(image folder, tag file, its non-blank rows): the folder and the tag file checked, blank rows skipped."""
    image_dir = check_root(image_dir)
    if tags is None:
        found = [os.path.join(image_dir, name) for name in TAG_FILES if os.path.isfile(os.path.join(image_dir, name))]
        if not found:
            raise FileNotFoundError(f"No tag file in {image_dir}: pass tags= or add one of {list(TAG_FILES)}.")
        tags = found[0]
    rows = read_tag_file(tags, separator)
    blank = [where for file_name, row_tags, where in rows if not file_name and not row_tags]
    if blank:
        logger.info("%s: skipped %d blank row(s), e.g. %s", tags, len(blank), blank[0])
    rows = [row for row in rows if row[0] or row[1]]
    if not rows:
        raise ValueError(f"{tags} lists no images.")
    return image_dir, tags, rows


def _tag_class_names(rows: list, class_names, tags: str) -> tuple[str, ...]:
    names = tag_class_names((row_tags for _, row_tags, _ in rows), class_names)
    names = check_class_names(names, f"class names for {tags}")
    class_index(names)  # two spellings of one class are refused
    return names


def check_tagged_images(image_dir: str, tags: str | None = None, *, class_names=None, separator=None, **_) -> None:
    """What `load_tagged_images` reads before any image: the folder, the tag file and the class names of its tags
    (errors as the loader's); no image is opened."""
    _, tags, rows = _tag_rows(image_dir, tags, separator)
    _tag_class_names(rows, class_names, tags)


def load_tagged_images(
    image_dir: str,
    tags: str | None = None,
    *,
    class_names=None,
    split: str = "train",
    separator: str | None = None,
    drop_background_only: bool = False,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    exclude: str | os.PathLike | Sequence[str | os.PathLike] = (),
) -> datasets.Dataset:
    """Loads a folder of images with image-level tags (no masks) as a `datasets.Dataset`.

    Args:
        image_dir: the folder of images.
        tags: the tag file (CSV, JSON or JSONL; see the module docstring); default: looked up in `image_dir`.
        class_names: the classes: a list of names (background first or not: it is prepended), a model's `id2label`,
            or a model / config (its `id2label`). Pass the model that will label the images, and the label ids
            are the model's class ids. Default: `background` + the sorted set of tags.
        split: a name for the split (for the cache and messages only).
        separator: the tag separator inside a CSV cell or a JSON string (default any of `;`, `|`, `,`).
        drop_background_only: leave out images without tags.
        cache_dir, num_proc: Arrow cache folder; processes used to validate images at build time.
        exclude: a folder or folders inside `image_dir` left out of the search for untagged images, e.g. an output
            folder of masks (`run_pseudo_labeling` passes its `out_dir`, so masks written inside the photo folder by
            an earlier run are not reported as untagged photos on the next).

    Returns:
        Columns `image`, `labels` (`List(ClassLabel)`, background first and always present), `id`. No `mask`.
        `loader_report(dataset)` lists the images left out (with reasons) and the untagged files of the folder.
    """
    image_dir, tags, rows = _tag_rows(image_dir, tags, separator)
    names = _tag_class_names(rows, class_names, tags)
    records, seen = _tagged_records(image_dir, rows, names)
    splits, _ = as_splits(split)
    dataset = build_from_records(
        records,
        names,
        with_mask=False,
        source=f"tagged images of {image_dir} ({tags})",
        split=splits[0],
        cache_dir=cache_dir,
        num_proc=num_proc,
        drop_background_only=drop_background_only,
        extra_files=[tags],
    )
    untagged = _untagged_files(image_dir, set(seen), tags, exclude)
    if untagged:
        logger.warning(
            "%s: %d image file(s) in %s have no row in the tag file and are not loaded, e.g. %s",
            tags,
            len(untagged),
            image_dir,
            untagged[:3],
        )
    return attach_loader_report(dataset, untagged=untagged)


def _tagged_records(image_dir: str, rows: list, names: Sequence[str]) -> tuple[list[dict], dict[str, str]]:
    """The records of the tag file's rows, and `{relative file name: where it is listed}`. A file listed twice, two
    files of one id (they would write the same mask), an unsafe or missing file: `ValueError` / `FileNotFoundError`
    naming the row."""
    records, seen, by_id = [], {}, {}
    for file_name, row_tags, where in rows:
        if not file_name:
            raise ValueError(f"{where}: empty file name (tags {row_tags}).")
        relative = _relative_file_name(file_name, where)
        if relative in seen:
            raise ValueError(f"{where}: {file_name!r} is listed twice (first at {seen[relative]}).")
        seen[relative] = where
        item_id = os.path.splitext(relative)[0]
        if item_id in by_id:
            raise ValueError(
                f"{where}: {file_name!r} and {by_id[item_id][0]!r} ({by_id[item_id][1]}) have the same id "
                f"{item_id!r} and would write the same mask; rename one of them."
            )
        by_id[item_id] = (file_name, where)
        labels = class_ids_from_tags(foreground_tags(row_tags), names, where=where, allow_ids=False)
        path = os.path.join(image_dir, relative)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found ({where}): {path}")
        records.append({"id": item_id, "image": path, "mask": None, "labels": labels})
    return records, seen


__all__ = ["check_tagged_images", "load_tagged_images", "read_tag_file"]
