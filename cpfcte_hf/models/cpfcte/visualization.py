# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Masks as images: the VOC palette, palette PNGs written atomically, overlays and a per-class IoU bar plot.

A mask is an `(H, W)` array of class ids, 0 = background, 255 = ignore. It is stored as a palette ("P") PNG whose
pixel values are the class ids (what VOC's `SegmentationClass` PNGs are), so that reading the PNG back gives the
ids and any viewer shows colours. Class 0 is black, 255 white.

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed). matplotlib is
imported only inside the plotting functions, so that the palette helpers (used by the pipeline, which can be
saved as remote code) work without it.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

from .metrics import IGNORE_INDEX


EXIF_ORIENTATION = 0x0112
IGNORE_COLOR = (255, 255, 255)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """
    The PASCAL VOC colour map `(num_colors, 3)` uint8: class i gets the colour whose bits interleave i's bits
    (0 black, 1 dark red, 2 dark green, ...), and 255 (ignore) is white.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    if num_colors > IGNORE_INDEX:
        palette[IGNORE_INDEX] = IGNORE_COLOR
    return palette


_PALETTE = voc_palette()


def _as_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"A mask must be (H, W), got shape {mask.shape}.")
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"Mask values must fit in 0..255 for a palette PNG, got {mask.min()}..{mask.max()}.")
        mask = mask.astype(np.uint8)
    return mask


def mask_to_image(mask) -> Image.Image:
    """`(H, W)` class ids -> PIL "P" image with the VOC palette (pixel values stay the class ids)."""
    image = Image.fromarray(_as_mask(mask))  # "L"; `putpalette` turns it into "P" without touching the values
    image.putpalette(_PALETTE.reshape(-1).tolist())
    return image


def colorize_mask(mask) -> np.ndarray:
    """`(H, W)` class ids -> `(H, W, 3)` uint8 RGB with the VOC palette."""
    return _PALETTE[_as_mask(mask)]


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened image, 1 when absent or unreadable."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means "no rotation", as for PIL's exif_transpose
        return 1


def as_displayed(image: Image.Image) -> Image.Image:
    """`image` as displayed: the package's one orientation rule for images, masks and predictions.

    An EXIF orientation other than 1 is applied (`ImageOps.exif_transpose`, which is what `datasets.Image` and
    `transformers.image_utils.load_image` apply when decoding); otherwise `image` itself is returned.
    """
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """
    Reads a mask PNG as `(H, W)` uint8 class ids: palette ("P") PNGs by index, grey ("L") PNGs by value, as displayed
    (an EXIF orientation tag is applied, as for images: `as_displayed`).

    Raises:
        ValueError: an RGB(A) image, whose colours would first have to be mapped back to class ids.
    """
    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.asarray(as_displayed(image), dtype=np.uint8).copy()
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):
            return np.asarray(as_displayed(image)).astype(np.uint8)
        raise ValueError(f"{path}: a mask must be a palette or greyscale PNG of class ids, got mode {image.mode!r}.")


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once (there is no read-only call); restored at once


def _atomic_write(path: str | os.PathLike, write) -> str:
    """Writes through a temporary file in the destination folder, then renames it over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode `open` would have
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes `data` to `path` atomically: readers see the old file or the whole new one, never a partial one."""
    return _atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_mask(mask, path: str | os.PathLike) -> str:
    """Saves `(H, W)` class ids as a VOC palette PNG, atomically (temporary file + `os.replace`). Returns the path."""
    image = mask_to_image(mask)
    return _atomic_write(path, lambda stream: image.save(stream, format="PNG"))


def overlay_mask(image: np.ndarray, mask, alpha: float = 0.5) -> np.ndarray:
    """Blends the coloured mask over an `(H, W, 3)` uint8 image; background (0) and ignore (255) stay see-through."""
    image = np.asarray(image, dtype=np.uint8)
    mask = _as_mask(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"Image {image.shape[:2]} and mask {mask.shape} sizes differ.")
    colours = colorize_mask(mask).astype(np.float32)
    blend = np.where(((mask != 0) & (mask != IGNORE_INDEX))[..., None], alpha, 0.0)
    return (image.astype(np.float32) * (1 - blend) + colours * blend).round().astype(np.uint8)


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _matplotlib():
    # Inside `try`: transformers' remote-code import check skips it, so the pipeline does not require matplotlib.
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as error:
        raise ImportError("Plots need matplotlib: `pip install matplotlib`.") from error
    return Figure, FigureCanvasAgg, Patch


def _new_figure(width: float, height: float):
    figure_class, canvas_class, _ = _matplotlib()
    figure = figure_class(figsize=(width, height), dpi=100)
    canvas_class(figure)
    return figure


def save_overlay_panels(
    path: str | os.PathLike,
    image: np.ndarray,
    masks: Mapping[str, np.ndarray | None],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float | None = None,
) -> str:
    """
    Saves a row of panels as PNG (atomically): the image, then each mask (e.g.
    `{"ground truth": gt, "BPM": bpm, "CRF": crf}`) in VOC colours, or blended over the image with weight `alpha`,
    with a legend of the classes that appear. `None` masks are drawn as an empty panel titled "missing".
    """
    image = np.asarray(image, dtype=np.uint8)
    panels = [("image", image)]
    present: set[int] = set()
    for name, mask in masks.items():
        if mask is None:
            panels.append((f"{name} (missing)", np.full_like(image, 255)))
            continue
        mask = _as_mask(mask)
        present.update(int(v) for v in np.unique(mask))
        if mask.shape != image.shape[:2]:
            raise ValueError(f"Mask {name!r} is {mask.shape}, the image {image.shape[:2]}.")
        panels.append((name, colorize_mask(mask) if alpha is None else overlay_mask(image, mask, alpha)))

    height, width = image.shape[:2]
    panel_width = 3.2
    figure = _new_figure(panel_width * len(panels), panel_width * height / max(width, 1) + 0.9)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (name, panel) in zip(axes, panels):
        axis.imshow(panel)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    present.discard(IGNORE_INDEX)
    if class_names is not None and present:
        _, _, Patch = _matplotlib()
        handles = [
            Patch(color=_PALETTE[c] / 255.0, label=class_names[c] if c < len(class_names) else str(c))
            for c in sorted(present)
        ]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return atomic_write_bytes(path, _figure_png(figure))


def plot_per_class_iou(
    path: str | os.PathLike,
    per_class_iou: Mapping[str, Sequence[float | None]],
    class_names: Sequence[str],
    title: str | None = None,
) -> str:
    """
    Saves a bar plot (PNG, atomically) of IoU per class, one bar group per class and one bar colour per prediction
    set (e.g. `{"BPM": [...], "CRF": [...]}`); each set's mIoU is in the legend. NaN / `None` (class absent)
    draws no bar.
    """
    names = list(class_names)
    series = {
        label: np.array([np.nan if v is None else float(v) for v in values]) for label, values in per_class_iou.items()
    }
    for label, values in series.items():
        if len(values) != len(names):
            raise ValueError(f"{label!r} has {len(values)} IoU values for {len(names)} classes.")
    figure = _new_figure(max(6.0, 0.42 * len(names) * max(1, len(series)) ** 0.5 + 1.5), 4.2)
    axis = figure.subplots()
    positions = np.arange(len(names))
    bar_width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        finite = values[~np.isnan(values)]
        mean = 100 * finite.mean() if finite.size else float("nan")
        axis.bar(
            positions + (index - (len(series) - 1) / 2) * bar_width,
            np.nan_to_num(100 * values, nan=0.0),
            width=bar_width,
            label=f"{label} (mIoU {mean:.1f})",
        )
    axis.set_xticks(positions)
    axis.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel("IoU (%)")
    axis.set_ylim(0, 100)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title, fontsize=10)
    return atomic_write_bytes(path, _figure_png(figure))


__all__ = [
    "IGNORE_INDEX",
    "as_displayed",
    "colorize_mask",
    "exif_orientation",
    "mask_to_image",
    "overlay_mask",
    "plot_per_class_iou",
    "read_mask",
    "save_mask",
    "save_overlay_panels",
    "voc_palette",
]
