# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What a prediction job's outputs were made from: each image's source (its file, or its decoded pixels for an
in-memory set), the content key recorded in `sources.json` (size and mtime first, a hash only when they differ), and
the check that decides whether a mask on disk is still current (resume keyed by content).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..utils.io import atomic_write_text


logger = logging.getLogger(__name__)


SOURCES_FILE = "sources.json"


JOURNAL_PREFIX = ".sources-"  # `.sources-<rank>.jsonl`: what each process finished since the last compaction


@dataclass(frozen=True)
class ImageSource:
    """
    Where an image's bytes are: a file (`path`; the loaders of `cpfcte_hf.data` keep local images as paths) or the
    bytes themselves (`data`: a Hub parquet row, an image made in memory such as the shapes set's, or, for a column
    that is not a `datasets.Image`, the Arrow value's canonical JSON).
    """

    path: str | None = None
    data: bytes | memoryview | None = None


def _blake2b_file(path: str) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(source: ImageSource, recorded: Mapping | None = None) -> dict:
    """
    What identifies the image's content: `{"blake2b": digest of its bytes}`, plus for a file its `size`,
    `mtime_ns` and `ctime_ns`. The cheap check first: when `recorded` (the key its masks were made from) has the
    same size and times, its digest is reused without reading the file; only a file whose size or times differ is
    read and hashed (a touched but identical file keeps its digest, and the new times are recorded).
    """
    if source.path is None:
        return {"blake2b": hashlib.blake2b(source.data, digest_size=20).hexdigest()}
    stat = os.stat(source.path)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    if recorded is not None and "blake2b" in recorded and all(recorded.get(k) == v for k, v in key.items()):
        return {**key, "blake2b": recorded["blake2b"]}
    return {**key, "blake2b": _blake2b_file(source.path)}


def _source_of(value) -> ImageSource:
    """An Arrow value of an image column -> `ImageSource` (a `datasets.Image` is a struct of `bytes` and `path`)."""
    import pyarrow as pa

    if pa.types.is_struct(value.type) and {"bytes", "path"} <= {f.name for f in value.type}:
        data, path = value["bytes"], value["path"]
        if data.is_valid:
            return ImageSource(data=memoryview(data.as_buffer()))
        if path.is_valid:
            return ImageSource(path=path.as_py())
        raise ValueError("the image has neither bytes nor a path")
    return ImageSource(data=json.dumps(value.as_py(), sort_keys=True, default=str).encode())


class DatasetSources:
    """
    `index -> ImageSource` for the `image` column of a `datasets.Dataset`, read as Arrow in blocks of `block` rows
    (nothing is decoded; a `select`ed or `filter`ed dataset is read through its indices).
    """

    def __init__(self, dataset, column: str = "image", block: int = 1024):
        self.rows = dataset.select_columns([column]).with_format("arrow")
        self.column, self.block = column, block
        self._start, self._values = 0, None

    def __call__(self, index: int) -> ImageSource:
        if self._values is None or not self._start <= index < self._start + len(self._values):
            self._start = index
            self._values = self.rows[index : index + self.block].column(self.column).combine_chunks()
        return _source_of(self._values[index - self._start])


class ContentRecord:
    """
    `<root>/sources.json`: per image id, the content key (`content_key`, plus the image's `inputs`) of the image its
    masks were made from. While a job runs, each process appends one line per finished image to its own journal
    (`<root>/.sources-<rank>.jsonl`), so a killed run loses no key; `compact` folds the journals into
    `sources.json` (the main process, at the start and the end of a job).
    """

    def __init__(self, root: str | os.PathLike, rank: int = 0):
        self.root = Path(root)
        self.path = self.root / SOURCES_FILE
        self.rank = rank
        self._journal = None

    def journals(self) -> list[Path]:
        return sorted(self.root.glob(f"{JOURNAL_PREFIX}*.jsonl"))

    def load(self) -> dict[str, dict]:
        """`{id: key}` of `sources.json` and the journals (an unreadable record counts as absent)."""
        records = {}
        if self.path.is_file():
            try:
                records = json.loads(self.path.read_text(encoding="utf-8"))["images"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning(f"{self.path} is unreadable ({error}): the images of existing masks are re-recorded.")
                records = {}
        for journal in self.journals():
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    records[entry.pop("id")] = entry
                except (ValueError, KeyError, AttributeError):  # the torn last line of a killed process
                    continue
        return records

    def compact(self) -> None:
        """Writes `sources.json` (atomically) from the record and the journals, then deletes the journals."""
        journals = self.journals()
        if journals:
            text = json.dumps({"images": self.load()}, sort_keys=True, separators=(",", ":"))
            atomic_write_text(self.path, text + "\n")
            for journal in journals:
                journal.unlink(missing_ok=True)

    def remove(self) -> None:
        for path in [self.path, *self.journals()]:
            path.unlink(missing_ok=True)

    def append(self, image_id: str, key: Mapping) -> None:
        """Records `key` for `image_id` in this process's journal (one line, flushed at once)."""
        if self._journal is None:
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / f"{JOURNAL_PREFIX}{self.rank}.jsonl"
            self._journal = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered: one write per line
        self._journal.write(json.dumps({"id": image_id, **key}, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def keyed_content(source: ImageSource, inputs, recorded: Mapping | None = None) -> dict:
    """`content_key` of `source` with the image's `inputs` (what else its masks depend on, e.g. its tags)."""
    key = content_key(source, recorded)
    if inputs is not None:
        key["inputs"] = inputs
    return key


def same_content(key: Mapping, recorded: Mapping) -> bool:
    """Whether `key` names the bytes and inputs that `recorded` does (a file's times may differ: touched)."""
    return key.get("blake2b") == recorded.get("blake2b") and key.get("inputs") == recorded.get("inputs")
