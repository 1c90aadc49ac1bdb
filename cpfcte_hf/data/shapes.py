# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The procedural "shapes" dataset: the default for the demo, the tests and the benchmarks (no download).

Each image holds 1-3 objects on a textured background; the class of an object is its *shape*:

    0 background, 1 disc, 2 square, 3 triangle, 4 ring, 5 cross, (6 star, 7 crescent, 8 bar, 9 arrow, 10 hexagon)

`num_classes` (foreground, default 5) takes the first shapes of that list. Objects have random sizes, positions,
rotations and a mild random aspect ratio, and may occlude each other (each keeps at least `1 - max_occlusion` of
its area visible, so its tag is always visible in the image). Colours and textures are *correlated* with the
class but do not determine it: with probability `colour_correlation` an object takes its class's hue plus noise,
otherwise a uniformly random hue; saturation and value are random; likewise for its texture. Backgrounds are
random two-colour textures (smooth noise, stripes, checkers, gradients) plus grain, in colours that overlap the
objects'. So a per-pixel colour classifier fit on ground truth stays far below the ground truth (see
`tests/test_data_shapes.py`), while shape, visible at the model's resolution, identifies the class.

Everything is a pure function of `(seed, split, index)` and the config: image `i` of a split is the same whatever
the number of images asked for, and the same seed gives the same bytes. Images are JPEG-encoded (quality 95, no
chroma subsampling) both in memory (`load_shapes`) and on disk (`write_shapes_voc`), so both paths yield the same
pixels; masks are palette PNGs (VOC colours) holding class ids, without ignore pixels.
"""

from __future__ import annotations

import colorsys
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..models.cpfcte.visualization import mask_to_image
from ..utils.io import atomic_write_bytes
from ..utils.lazy import lazy_module
from ._common import BACKGROUND, make_features


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


SHAPE_NAMES = ("disc", "square", "triangle", "ring", "cross", "star", "crescent", "bar", "arrow", "hexagon")
OBJECT_TEXTURES = ("flat", "stripes", "checker", "dots", "gradient", "grain")
BACKGROUND_TEXTURES = ("smooth", "stripes", "checker", "gradient")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
TRAIN_ALIASES = ("train_aug", "trainaug")
JPEG_OPTIONS = {"quality": 95, "subsampling": 0}
SHAPES_VERSION = "shapes-1"


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of the procedural shapes set. Every field changes the images (and the cache key).

    Attributes:
        num_classes: foreground classes, 1..10 (background is added as class 0).
        image_size: side of the square images, in pixels.
        min_objects, max_objects: objects per image (uniform); objects of the same class may repeat.
        min_radius, max_radius: object radius as a fraction of `image_size` (uniform).
        colour_correlation: probability that an object's hue is its class hue (+ `hue_noise` Gaussian noise);
            otherwise the hue is uniform. 0 makes colour carry no class information at all.
        hue_noise: standard deviation of the class-hue noise, as a fraction of the hue circle.
        texture_correlation: probability that an object wears its class's preferred texture, else a random one.
        max_occlusion: largest fraction of an object that later objects may cover.
        min_background: smallest fraction of the image left to the background.
        min_contrast: smallest RGB distance (0..255 scale) between an object's colour and the background under it.
        background_contrast: how strongly the background texture mixes its two colours (0 = a flat blend, 1 = full).
        texture_strength: scale of the brightness modulation of object textures (0 = flat objects).
        seed: the seed; `(seed, split, index)` determines each image.
    """

    num_classes: int = 5
    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    min_radius: float = 0.13
    max_radius: float = 0.27
    colour_correlation: float = 0.5
    hue_noise: float = 0.05
    texture_correlation: float = 0.5
    max_occlusion: float = 0.35
    min_background: float = 0.25
    min_contrast: float = 70.0
    background_contrast: float = 1.0
    texture_strength: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.num_classes <= len(SHAPE_NAMES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPE_NAMES)}, got {self.num_classes}.")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"Need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}.")
        if not 0 < self.min_radius <= self.max_radius <= 0.5:
            raise ValueError(f"Need 0 < min_radius <= max_radius <= 0.5, got {self.min_radius}, {self.max_radius}.")

    @property
    def class_names(self) -> tuple[str, ...]:
        return (BACKGROUND, *SHAPE_NAMES[: self.num_classes])


# ----------------------------------------------------------------------------------------------------------------
# shapes: polygons in a unit frame (the object's radius is 1), drawn in order with fill 1 (add) or 0 (cut)
# ----------------------------------------------------------------------------------------------------------------


def _regular(count: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(count) / count
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    angles = math.pi * np.arange(2 * points) / points
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _shape_parts(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Polygons of one shape, areas roughly matched (about 2 in unit-radius units)."""
    if name == "disc":
        return [(_regular(48, 0.85), 1)]
    if name == "square":
        return [(np.array([[-0.74, -0.74], [0.74, -0.74], [0.74, 0.74], [-0.74, 0.74]]), 1)]
    if name == "triangle":
        return [(_regular(3, 1.15, math.pi / 2), 1)]
    if name == "ring":
        return [(_regular(48, 1.0), 1), (_regular(48, rng.uniform(0.5, 0.62)), 0)]
    if name == "cross":
        a, w = 1.0, 0.3
        return [
            (
                np.array(
                    [
                        [-w, -a],
                        [w, -a],
                        [w, -w],
                        [a, -w],
                        [a, w],
                        [w, w],
                        [w, a],
                        [-w, a],
                        [-w, w],
                        [-a, w],
                        [-a, -w],
                        [-w, -w],
                    ]
                ),
                1,
            )
        ]
    if name == "star":
        return [(_star(5, 1.15, 0.48), 1)]
    if name == "crescent":
        return [(_regular(48, 0.95), 1), (_regular(48, 0.8) + np.array([0.5, 0.0]), 0)]
    if name == "bar":
        return [(np.array([[-1.1, -0.36], [1.1, -0.36], [1.1, 0.36], [-1.1, 0.36]]), 1)]
    if name == "arrow":
        return [
            (
                np.array(
                    [[-1.0, -0.22], [0.2, -0.22], [0.2, -0.6], [1.05, 0.0], [0.2, 0.6], [0.2, 0.22], [-1.0, 0.22]]
                ),
                1,
            )
        ]
    if name == "hexagon":
        return [(_regular(6, 0.88), 1)]
    raise ValueError(f"Unknown shape {name!r}.")


def _rasterize(parts, centre, radius, angle, aspect, size, supersample=2) -> np.ndarray:
    """Coverage in [0, 1] of the shape on a `(size, size)` grid (anti-aliased by supersampling)."""
    canvas = Image.new("L", (size * supersample, size * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scale = np.array([radius * aspect, radius / aspect])
    for points, fill in parts:
        xy = (points * scale) @ rotation.T + np.asarray(centre)
        xy = xy * supersample
        draw.polygon([tuple(p) for p in xy.tolist()], fill=255 * fill)
    coverage = np.asarray(canvas, dtype=np.float32).reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return coverage / 255.0


# ----------------------------------------------------------------------------------------------------------------
# colours and textures
# ----------------------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return 255.0 * np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _object_texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A `(size, size)` field in [-1, 1] that modulates an object's brightness."""
    x, y = _grid(size)
    if kind == "flat":
        return np.zeros((size, size), np.float32)
    if kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(3.5, 8.0)
        return np.tanh(3 * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period))
    if kind == "checker":
        cell = rng.uniform(2.5, 6.0)
        return np.sign(np.sin(math.pi * x / cell) * np.sin(math.pi * y / cell) + 1e-6)
    if kind == "dots":
        period = rng.uniform(4.0, 8.0)
        dx, dy = (x % period) - period / 2, (y % period) - period / 2
        return np.where(dx * dx + dy * dy < (0.3 * period) ** 2, 1.0, -0.6).astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = x * math.cos(angle) + y * math.sin(angle)
        return (2 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6) - 1).astype(np.float32)
    if kind == "grain":
        coarse = rng.uniform(-1, 1, size=((size + 1) // 2, (size + 1) // 2)).astype(np.float32)
        return np.kron(coarse, np.ones((2, 2), np.float32))[:size, :size]
    raise ValueError(kind)


def _background(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """A `(size, size, 3)` float image in 0..255: two random colours mixed by a random texture, plus grain."""
    first = _hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    if rng.uniform() < 0.6:
        h, s, v = colorsys.rgb_to_hsv(*(first / 255.0))
        second = _hsv(
            h + rng.normal(0, 0.12), np.clip(s + rng.normal(0, 0.2), 0, 1), np.clip(v + rng.normal(0, 0.3), 0.05, 1)
        )
    else:
        second = _hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    x, y = _grid(size)
    kind = BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))]
    if kind == "smooth":
        cells = int(rng.integers(3, 8))
        low = Image.fromarray((rng.uniform(0, 1, size=(cells, cells)) * 255).astype(np.uint8))
        mix = np.asarray(low.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.08, 0.3) * size
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    elif kind == "checker":
        cell = rng.uniform(0.06, 0.2) * size
        mix = (np.sin(math.pi * x / cell) * np.sin(math.pi * y / cell) > 0).astype(np.float32)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = x * math.cos(angle) + y * math.sin(angle)
        mix = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    mix = 0.5 + contrast * (mix - 0.5)
    image = first * (1 - mix[..., None]) + second * mix[..., None]
    return image + rng.normal(0, rng.uniform(3, 10), size=image.shape).astype(np.float32)


def _object_colour(config: ShapesConfig, class_id: int, rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < config.colour_correlation:
        hue = (class_id - 1) / config.num_classes + rng.normal(0, config.hue_noise)
    else:
        hue = rng.uniform()
    return _hsv(hue, rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------------------------------------------


def _split_code(split: str) -> int:
    if split in SPLIT_CODES:
        return SPLIT_CODES[split]
    return 1000 + int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little") % 1_000_000


def render_shapes_sample(config: ShapesConfig, split: str, index: int) -> dict:
    """Renders image `index` of `split`.

    Returns:
        `{"id": str, "image": (S, S, 3) uint8, "mask": (S, S) uint8 class ids, "labels": sorted class ids
        present in the mask (background 0 included)}`. The image is the raw rendering, before JPEG encoding.
    """
    rng = np.random.default_rng([config.seed, _split_code(split), index])
    size = config.image_size
    image = _background(rng, size, config.background_contrast)
    mask = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int16)  # which placed object each pixel shows
    areas: list[int] = []
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(count):
        class_id = int(rng.integers(1, config.num_classes + 1))
        name = SHAPE_NAMES[class_id - 1]
        for _attempt in range(30):
            radius = rng.uniform(config.min_radius, config.max_radius) * size
            margin = 0.8 * radius
            centre = rng.uniform(margin, size - margin, size=2)
            parts = _shape_parts(name, rng)
            coverage = _rasterize(parts, centre, radius, rng.uniform(0, 2 * math.pi), rng.uniform(0.85, 1.18), size)
            inside = coverage >= 0.5
            area = int(inside.sum())
            if area < 12:
                continue
            covered = owner[inside]
            ok = all(
                (owner == j).sum() - (covered == j).sum() >= (1 - config.max_occlusion) * areas[j]
                for j in range(len(areas))
            )
            background_left = ((owner < 0) & ~inside).mean()
            if ok and background_left >= config.min_background:
                break
        else:
            continue  # no placement found: fewer objects in this image
        region = image[inside].mean(axis=0)
        colour = _object_colour(config, class_id, rng)
        for _retry in range(10):
            if np.linalg.norm(colour - region) >= config.min_contrast:
                break
            colour = _object_colour(config, class_id, rng)
        if rng.uniform() < config.texture_correlation:
            texture = OBJECT_TEXTURES[(class_id - 1) % len(OBJECT_TEXTURES)]
        else:
            texture = OBJECT_TEXTURES[rng.integers(len(OBJECT_TEXTURES))]
        amplitude = 0.0 if texture == "flat" else rng.uniform(0.2, 0.4) * config.texture_strength
        field = _object_texture(texture, rng, size)
        fill = colour[None, None, :] * (1.0 + amplitude * field[..., None])
        fill = fill + rng.normal(0, 3.0, size=fill.shape).astype(np.float32)
        alpha = coverage[..., None]
        image = image * (1 - alpha) + fill * alpha
        mask[inside] = class_id
        owner[inside] = len(areas)
        areas.append(area)
    labels = sorted(int(v) for v in np.unique(mask))
    if labels[0] != 0:
        labels = [0, *labels]
    return {
        "id": f"shapes_{split}_{index:06d}",
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "mask": mask,
        "labels": labels,
    }


def encode_sample(sample: dict) -> tuple[bytes, bytes]:
    """(JPEG bytes of the image, palette-PNG bytes of the mask), exactly as written to disk."""
    image_buffer, mask_buffer = io.BytesIO(), io.BytesIO()
    Image.fromarray(sample["image"]).save(image_buffer, format="JPEG", **JPEG_OPTIONS)
    mask_to_image(sample["mask"]).save(mask_buffer, format="PNG")
    return image_buffer.getvalue(), mask_buffer.getvalue()


def _generate_shapes(config: dict, split: str, indices: list, version: str):
    shapes_config = ShapesConfig(**config)
    for index in indices:
        sample = render_shapes_sample(shapes_config, split, index)
        image_bytes, mask_bytes = encode_sample(sample)
        yield {
            "image": {"bytes": image_bytes, "path": None},
            "mask": {"bytes": mask_bytes, "path": None},
            "labels": sample["labels"],
            "id": sample["id"],
        }


# ----------------------------------------------------------------------------------------------------------------
# public loaders
# ----------------------------------------------------------------------------------------------------------------


def _config_from(config: ShapesConfig | None, overrides: dict) -> ShapesConfig:
    config = config or ShapesConfig()
    return dataclasses.replace(config, **overrides) if overrides else config


def load_shapes(
    split: str | Sequence[str] | None = None,
    *,
    num_train: int = 2000,
    num_val: int = 300,
    num_test: int = 300,
    config: ShapesConfig | None = None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    **config_overrides,
) -> datasets.Dataset | datasets.DatasetDict:
    """Generates the shapes set in memory (Arrow-cached) as `datasets` objects.

    Args:
        split: `"train"` (alias `"train_aug"`), `"val"` or `"test"` (a `Dataset`), a list of them, or None for
            train and val (a `DatasetDict`).
        num_train, num_val, num_test: images per split. Image `i` does not depend on the count.
        config: a `ShapesConfig`; keyword arguments (`num_classes=`, `image_size=`, `seed=`, ...) override fields.
        cache_dir: where `datasets` keeps the Arrow files (default: the `datasets` cache).
        num_proc: processes for generation (worth it above some thousands of images).

    Returns:
        Columns `image` (JPEG), `mask` (palette PNG of class ids), `labels` (`List(ClassLabel)`, background
        first), `id` (`shapes_<split>_<index>`).

    Example:
        >>> shapes = load_shapes(num_train=100, num_val=20, image_size=64)
        >>> shapes["train"].features["labels"].feature.names
        ['background', 'disc', 'square', 'triangle', 'ring', 'cross']
    """
    config = _config_from(config, config_overrides)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    names = ["train", "val"] if split is None else [split] if isinstance(split, str) else list(split)
    names = ["train" if name in TRAIN_ALIASES else name for name in names]  # so VOC-style defaults work too
    features = make_features(config.class_names, with_mask=True)
    result = {}
    for name in names:
        count = counts.get(name)
        if count is None:
            raise ValueError(f"Unknown shapes split {name!r}; use 'train', 'val' or 'test'.")
        if count < 1:
            raise ValueError(f"The {name} split needs at least one image, got {count}.")
        result[name] = datasets.Dataset.from_generator(
            _generate_shapes,
            features=features,
            cache_dir=cache_dir,
            num_proc=num_proc if num_proc and num_proc > 1 and count > 1 else None,
            split=datasets.NamedSplit(name),
            gen_kwargs=dict(
                config=dataclasses.asdict(config), split=name, indices=list(range(count)), version=SHAPES_VERSION
            ),
        )
    if isinstance(split, str):
        return result[names[0]]
    return datasets.DatasetDict(result)


make_shapes_dataset = load_shapes


def write_shapes_voc(
    out_dir: str,
    *,
    num_train: int = 2000,
    num_val: int = 300,
    config: ShapesConfig | None = None,
    **config_overrides,
) -> dict:
    """Writes the shapes set to `out_dir` in the VOC layout, to be read back with `load_voc(out_dir, split)`.

    Writes `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (palette PNG, class ids),
    `ImageSets/Segmentation/{train,train_aug,val}.txt` (`train_aug` lists the same ids as `train`, so that commands
    with VOC defaults run unchanged) and `class_names.txt` (one name per line, background first), which `load_voc`
    picks up. Files that exist with the same content are left untouched, so a re-run is cheap and idempotent.

    Returns:
        `{"root": out_dir, "class_names": [...], "splits": {"train": n, "val": n}}`.
    """
    config = _config_from(config, config_overrides)
    image_dir = os.path.join(out_dir, "JPEGImages")
    mask_dir = os.path.join(out_dir, "SegmentationClass")
    list_dir = os.path.join(out_dir, "ImageSets", "Segmentation")
    for directory in (image_dir, mask_dir, list_dir):
        os.makedirs(directory, exist_ok=True)
    splits = {}
    for name, count in (("train", num_train), ("val", num_val)):
        ids = []
        for index in range(count):
            sample = render_shapes_sample(config, name, index)
            image_bytes, mask_bytes = encode_sample(sample)
            _write_if_changed(os.path.join(image_dir, sample["id"] + ".jpg"), image_bytes)
            _write_if_changed(os.path.join(mask_dir, sample["id"] + ".png"), mask_bytes)
            ids.append(sample["id"])
        lists = [name, "train_aug"] if name == "train" else [name]
        for list_name in lists:
            _write_if_changed(os.path.join(list_dir, f"{list_name}.txt"), ("\n".join(ids) + "\n").encode())
        splits[name] = count
    _write_if_changed(os.path.join(out_dir, "class_names.txt"), ("\n".join(config.class_names) + "\n").encode())
    return {"root": out_dir, "class_names": list(config.class_names), "splits": splits}


def _write_if_changed(path: str, data: bytes) -> None:
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as handle:
            if handle.read() == data:
                return
    atomic_write_bytes(path, data)


__all__ = [
    "SHAPE_NAMES",
    "ShapesConfig",
    "encode_sample",
    "load_shapes",
    "make_shapes_dataset",
    "render_shapes_sample",
    "write_shapes_voc",
]
