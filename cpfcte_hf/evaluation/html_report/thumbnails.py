# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The report's pictures: each image as a small JPEG, and each of its masks blended over it, under `report_assets/`.

A thumbnail's file name is a digest of everything it is drawn from: the photo (its path, size and modification time
when it is a file, else a digest of its bytes), the mask file (size and modification time), the class mapping of a
ground-truth mask, the thumbnail size and `DRAWING_VERSION`. So a file that exists is current and is not drawn again;
a changed photo or mask gets a new name; `remove_unused` deletes what no page refers to. Files are written
atomically (`visualization.atomic_write_bytes`). Masks are coloured with the package's one palette and blended with
its one overlay (`visualization.overlay_mask`).

The classes present in each mask (for the report's class filter) are kept in `report_assets/classes.json`, keyed by
the same names, so that a report over 10,000 current thumbnails reads no mask.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ...models.cpfcte.image_processing_cpfcte import to_rgb_array
from ...models.cpfcte.visualization import as_displayed, exif_orientation, overlay_mask, read_mask
from ...utils.io import atomic_write_bytes, atomic_write_text


ASSETS_DIR = "report_assets"
CLASSES_FILE = "classes.json"
THUMBNAIL_SIDE = 160
OVERLAY_ALPHA = 0.55
JPEG_QUALITY = 80
DRAWING_VERSION = "1"  # raise when the drawing changes: every thumbnail is then drawn anew


def file_key(path: str | os.PathLike) -> str | None:
    """`size:mtime_ns` of a file, `None` when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def source_key(source) -> str | None:
    """
    What a dataset's image (or mask) value is, as a short string: `file:<path>:<size>:<mtime_ns>` for a file on disk,
    else `bytes:<sha1>` of its encoded bytes, else `array:<sha1>` of its pixels; `None` for no value.
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            return "bytes:" + hashlib.sha1(source["bytes"]).hexdigest()
        source = source.get("path")
        if source is None:
            return None
    if isinstance(source, (str, os.PathLike)):
        key = file_key(source)
        return None if key is None else f"file:{os.path.abspath(source)}:{key}"
    if isinstance(source, Image.Image):
        source = np.asarray(source)
    array = np.ascontiguousarray(source)
    return f"array:{array.shape}:" + hashlib.sha1(array.tobytes()).hexdigest()


def open_source(source) -> Image.Image:
    """A dataset's image value (`{"bytes", "path"}`, a path, a PIL image or an array) as an opened PIL image."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, Mapping):
        source = io.BytesIO(source["bytes"]) if source.get("bytes") is not None else source["path"]
    if isinstance(source, (str, os.PathLike, io.BytesIO)):
        return Image.open(source)
    return Image.fromarray(np.asarray(source))


class RelativeURLs:
    """Paths relative to the folder `start`, as percent-encoded URL paths (`None` when there is no relative path, e.g.
    another drive). Every character outside `[A-Za-z0-9_.~/-]` is encoded: no name becomes markup or a scheme. The
    relative path of each folder is worked out once (10,000 photos usually share a few folders)."""

    def __init__(self, start: str | os.PathLike):
        self.start = os.path.abspath(start)
        self._folders: dict[str, str | None] = {}

    def __call__(self, path: str | os.PathLike) -> str | None:
        folder, name = os.path.split(os.fspath(path))
        if folder not in self._folders:
            try:
                relative = os.path.relpath(os.path.abspath(folder or "."), self.start)
                self._folders[folder] = urllib.parse.quote(Path(relative).as_posix(), safe="/") + "/"
            except ValueError:
                self._folders[folder] = None
        prefix = self._folders[folder]
        return None if prefix is None else (prefix + urllib.parse.quote(name, safe="")).removeprefix("./")


def _digest(*parts) -> str:
    return hashlib.sha1("\x00".join(str(part) for part in parts).encode("utf-8")).hexdigest()[:24]


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _index_mask(image: Image.Image) -> np.ndarray:
    """A ground-truth mask as `(H, W)` class ids (palette and grey PNGs hold them), as displayed."""
    if image.mode not in ("P", "L", "I", "I;16"):
        raise ValueError(f"ground-truth mask has mode {image.mode!r}, not class ids")
    return np.asarray(as_displayed(image)).astype(np.uint8)


def _present(mask: np.ndarray, num_labels: int) -> list[int]:
    counts = np.bincount(mask.ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts[:num_labels])]


@dataclass
class RowPictures:
    """What `ThumbnailWriter.draw` gives for one image."""

    thumbnails: list[str | None]  # one per panel: a path relative to the report's folder, or None
    size: tuple[int, int] | None = None  # (width, height) of the thumbnails
    classes: dict[str, list[int]] = field(default_factory=dict)  # classes present per mask panel
    errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # the mask panels whose file does not exist
    photo_file: str | None = None  # the photo's file, when it is one on disk


class ThumbnailWriter:
    """
    Draws the thumbnails of a report's rows into `<report folder>/report_assets/` (see the module docstring).

    Args:
        report_dir: the folder of `report.html`.
        num_labels: classes of the masks (ids at or above it are not listed as present).
        gt_lookup: `(256,)` uint8 table from ground-truth ids to the report's class ids (`None`: the same ids).
        side: the longest side of a thumbnail.
    """

    def __init__(self, report_dir: str | os.PathLike, num_labels: int, gt_lookup=None, side: int = THUMBNAIL_SIDE):
        self.report_dir = Path(report_dir)
        self._root = os.fspath(
            self.report_dir
        )  # plain strings in the per-thumbnail loop: pathlib costs seconds at 10k
        self.assets = self.report_dir / ASSETS_DIR
        self.num_labels = int(num_labels)
        self.gt_lookup = None if gt_lookup is None else np.asarray(gt_lookup, dtype=np.uint8)
        self.side = int(side)
        self._lookup_digest = "" if gt_lookup is None else _digest(*self.gt_lookup.tolist())
        self.cache = self._read_cache()
        self.existing = self._list_thumbnails()  # one listing instead of a `stat` per thumbnail
        self.drawn = 0

    def _list_thumbnails(self) -> set[str]:
        names = set()
        for folder in os.scandir(self.assets) if self.assets.is_dir() else ():
            if folder.is_dir():
                names.update(f"{ASSETS_DIR}/{folder.name}/{entry.name}" for entry in os.scandir(folder.path))
        return names

    def _read_cache(self) -> dict:
        try:
            cache = json.loads((self.assets / CLASSES_FILE).read_text(encoding="utf-8"))
            return cache if isinstance(cache, dict) and cache.get("version") == DRAWING_VERSION else {}
        except (OSError, ValueError):
            return {}

    def _name(self, digest: str) -> str:
        return f"{ASSETS_DIR}/{digest[:2]}/{digest[2:]}.jpg"  # 256 sub-folders: no folder of 40,000 files

    def draw(self, photo, gt, masks: Mapping[str, str | os.PathLike | None]) -> RowPictures:
        """
        Thumbnails of one image: the photo, the ground truth over it (when `gt` is given) and each mask of `masks`
        (`{panel title: mask file or None}`) over it. Missing masks and unreadable files give `None` panels and a
        reason in `errors`; nothing raises.
        """
        photo_key = source_key(photo)
        entries, result = self._entries(photo, photo_key, gt, masks)
        if photo_key is None:
            result.errors.append("photo: not available")
            return result
        todo = []
        for index, (title, key, kind, source) in enumerate(entries):
            if key is None:
                continue
            name, cached = self._name(key), self.cache.get(key)
            if cached is None or name not in self.existing:
                todo.append((index, title, key, kind, source))
                continue
            result.thumbnails[index] = name
            result.size = tuple(cached["size"]) if cached.get("size") else result.size
            if kind is not None:
                result.classes[title] = cached.get("classes", [])
        if todo:
            self._draw(photo, todo, result)
        return result

    def _entries(self, photo, photo_key, gt, masks) -> tuple[list[tuple], RowPictures]:
        """`(title, digest or None, kind, source)` per panel, and the row's result with the missing masks noted."""
        entries = [("photo", _digest("photo", DRAWING_VERSION, self.side, photo_key), None, None)]
        if gt is not None:
            key = _digest("gt", DRAWING_VERSION, self.side, photo_key, source_key(gt), self._lookup_digest)
            entries.append(("ground truth", key, "gt", gt))
        result = RowPictures(thumbnails=[])
        for title, path in masks.items():
            mask_key = file_key(path) if path is not None else None
            key = None if mask_key is None else _digest("mask", DRAWING_VERSION, self.side, photo_key, path, mask_key)
            entries.append((title, key, "mask", path))
            if mask_key is None:
                result.missing.append(title)
        result.thumbnails = [None] * len(entries)
        if photo_key is not None and photo_key.startswith("file:"):  # `source_key` found the file: no second stat
            result.photo_file = os.fspath(photo["path"] if isinstance(photo, Mapping) else photo)
        return entries, result

    def _draw(self, photo, todo: list[tuple], result: RowPictures) -> None:
        """Draws the panels of `todo` (`(index, title, digest, kind, source)`) into `result`: the photo is decoded
        once (JPEGs at a reduced scale), each mask is blended over its thumbnail."""
        try:
            with open_source(photo) as image:
                width, height = image.size
                original_size = (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)
                if image.format == "JPEG":
                    image.draft("RGB", (2 * self.side, 2 * self.side))  # decode at 1/2..1/8 scale: much faster
                thumbnail = Image.fromarray(to_rgb_array(as_displayed(image)))
            thumbnail.thumbnail((self.side, self.side), Image.Resampling.BICUBIC, reducing_gap=2.0)
            photo_array = np.asarray(thumbnail)
        except Exception as error:  # noqa: BLE001 - a photo that cannot be read is a reason, not a crash
            result.errors.append(f"photo: {type(error).__name__}: {error}")
            return
        size = result.size = (photo_array.shape[1], photo_array.shape[0])
        for index, title, key, kind, source in todo:
            try:
                classes, array = None, photo_array
                if kind is not None:
                    mask = self._mask(kind, source)
                    classes = _present(mask, self.num_labels)
                    if mask.shape[::-1] != original_size:
                        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]}, the photo {original_size}")
                    small = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
                    array = overlay_mask(photo_array, small, OVERLAY_ALPHA)
                name = self._name(key)
                atomic_write_bytes(os.path.join(self._root, name), _jpeg(array))
            except Exception as error:  # noqa: BLE001
                result.errors.append(f"{title}: {type(error).__name__}: {error}")
                continue
            self.existing.add(name)
            self.drawn += 1
            result.thumbnails[index] = name
            self.cache[key] = {"size": list(size), **({"classes": classes} if classes is not None else {})}
            if classes is not None:
                result.classes[title] = classes

    def _mask(self, kind: str, source) -> np.ndarray:
        """A ground-truth mask (mapped to the report's class ids) or a mask file, as `(H, W)` class ids."""
        if kind == "mask":
            return read_mask(source)
        with open_source(source) as opened:
            mask = _index_mask(opened)
        return mask if self.gt_lookup is None else self.gt_lookup[mask]

    def finish(self, used: Sequence[str]) -> int:
        """Keeps the cache entries and files of the thumbnails in `used` (paths as `draw` returns them), writes the
        cache, and removes every other thumbnail (and temporary file) under `report_assets/`. Returns how many."""
        used = set(used)
        keys = {thumbnail_key(name) for name in used}
        cache = {key: value for key, value in self.cache.items() if key in keys}
        self.assets.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.assets / CLASSES_FILE, json.dumps({**cache, "version": DRAWING_VERSION}) + "\n")
        return remove_unused(self.report_dir, used)


def thumbnail_key(name: str) -> str:
    """The digest a thumbnail's path (`report_assets/ab/cdef….jpg`) was made from: its cache key."""
    folder, _, file_name = name.rpartition("/")
    return folder[-2:] + file_name[: -len(".jpg")]


def remove_unused(report_dir: str | os.PathLike, used: set[str]) -> int:
    """Deletes the `.jpg` and `.tmp-*` files under `report_assets/` whose relative path is not in `used`."""
    assets = os.path.join(report_dir, ASSETS_DIR)
    removed = 0
    for folder in os.scandir(assets) if os.path.isdir(assets) else ():
        if not folder.is_dir():
            continue
        kept = 0
        for entry in os.scandir(folder.path):
            unused = f"{ASSETS_DIR}/{folder.name}/{entry.name}" not in used
            if entry.is_file() and (entry.name.endswith(".jpg") or entry.name.startswith(".tmp-")) and unused:
                os.unlink(entry.path)
                removed += 1
            else:
                kept += 1
        if not kept:
            os.rmdir(folder.path)
    return removed


__all__ = [
    "ASSETS_DIR",
    "THUMBNAIL_SIDE",
    "RowPictures",
    "ThumbnailWriter",
    "file_key",
    "open_source",
    "RelativeURLs",
    "remove_unused",
    "source_key",
    "thumbnail_key",
]
