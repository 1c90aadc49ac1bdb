# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What the app accepts from a browser: bounded uploads, checked before a photo is decoded.

Each uploaded file is at most `max_bytes` (Gradio refuses a larger upload itself, `launch(max_file_size=...)`, and
the app checks again), at most `max_pixels` (width x height, read from the file's header before decoding: no
decompression bomb is ever expanded), and a request holds at most `max_files` photos. A file that is no image, or
an image over a limit, is refused with a one-line reason naming the file; the other photos of the request are
labelled.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..models.cpfcte.image_processing_cpfcte import to_rgb_array
from ..models.cpfcte.visualization import as_displayed


MIB = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    """Bounds of what one request may upload (the defaults are documented in the README's App section)."""

    max_bytes: int = 25 * MIB  # per file: a 24 MP JPEG from a phone is 5-15 MB
    max_pixels: int = 40_000_000  # per photo (width x height): a 40 MP camera; larger photos are refused
    max_files: int = 16  # photos per request

    def __post_init__(self):
        if min(self.max_bytes, self.max_pixels, self.max_files) < 1:
            raise ValueError(f"Upload limits must be >= 1, got {self}.")

    def describe(self) -> str:
        return (
            f"up to {self.max_files} photos per request, each at most {self.max_bytes / MIB:.0f} MB and "
            f"{self.max_pixels / 1e6:.0f} megapixels"
        )


class AppInputError(ValueError):
    """A model folder or output directory the app cannot use (the message names it): a one-line CLI error."""


class UploadRefused(ValueError):
    """An upload the app does not process; the message names the file and why."""


def markdown_text(value) -> str:
    """`value` as literal text inside a Gradio Markdown block: HTML escaped, Markdown punctuation backslashed (a
    file name, tag or class name is shown as it is, never as markup or a link)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", html.escape(str(value)))


def upload_name(path: str | os.PathLike) -> str:
    """The name a user gave the file (Gradio keeps it as the last part of the upload's path)."""
    return os.path.basename(os.fspath(path))


def check_file_count(paths, limits: UploadLimits) -> list:
    paths = [p for p in (paths or []) if p]
    if len(paths) > limits.max_files:
        raise UploadRefused(
            f"{len(paths)} photos in one request; at most {limits.max_files} (upload fewer at a time)."
        )
    return paths


def read_upload(path: str | os.PathLike, limits: UploadLimits) -> np.ndarray:
    """
    The uploaded photo at `path` as `(H, W, 3)` uint8 RGB, as displayed (EXIF orientation applied, as `label` reads
    photos).

    Raises:
        UploadRefused: too many bytes or pixels, or not an image PIL can read (the message names the file).
    """
    name = upload_name(path)
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise UploadRefused(f"{name}: {size / MIB:.1f} MB, more than the {limits.max_bytes / MIB:.0f} MB allowed.")
    try:
        with Image.open(path) as image:
            width, height = image.size  # the header only: nothing decoded yet
            if width * height > limits.max_pixels:
                raise UploadRefused(
                    f"{name}: {width}x{height} = {width * height / 1e6:.1f} megapixels, more than the "
                    f"{limits.max_pixels / 1e6:.0f} allowed."
                )
            return to_rgb_array(as_displayed(image))
    except UploadRefused:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        reason = "not an image file" if isinstance(error, UnidentifiedImageError) else f"unreadable image ({error})"
        raise UploadRefused(f"{name}: {reason}.") from None


__all__ = [
    "AppInputError",
    "MIB",
    "markdown_text",
    "UploadLimits",
    "UploadRefused",
    "check_file_count",
    "read_upload",
    "upload_name",
]
