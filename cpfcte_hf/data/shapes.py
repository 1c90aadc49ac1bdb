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

import dataclasses
import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..models.cpfcte.visualization import mask_to_image
from ..utils.io import atomic_write_bytes
from ..utils.lazy import lazy_module
from ._common import BACKGROUND, make_features
from .shape_drawing import (  # noqa: F401 - BACKGROUND_TEXTURES: importable here too
    BACKGROUND_TEXTURES,
    OBJECT_TEXTURES,
    Occupancy,
    blend_object,
    draw_shape,
    hsv,
    object_texture,
    place_object,
    textured_background,
)


datasets = lazy_module("datasets")  # imported when a loader runs, not for the checks


SHAPE_NAMES = ("disc", "square", "triangle", "ring", "cross", "star", "crescent", "bar", "arrow", "hexagon")
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
# one sample (drawn with `shape_drawing`)
# ----------------------------------------------------------------------------------------------------------------


def _object_colour(config: ShapesConfig, class_id: int, rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < config.colour_correlation:
        hue = (class_id - 1) / config.num_classes + rng.normal(0, config.hue_noise)
    else:
        hue = rng.uniform()
    return hsv(hue, rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))


def _draw_object(config: ShapesConfig, name: str, rng: np.random.Generator) -> np.ndarray:
    """One try at placing shape `name`: its coverage at a random size and position on the square image."""
    radius = rng.uniform(config.min_radius, config.max_radius) * config.image_size
    margin = 0.8 * radius
    centre = rng.uniform(margin, config.image_size - margin, size=2)
    return draw_shape(rng, name, centre, radius, config.image_size)


def _paint_object(config: ShapesConfig, class_id: int, rng: np.random.Generator, image, coverage, inside):
    """`image` with an object of class `class_id` painted over `coverage`: a colour that stands out from the
    background under it, and a texture (the class's own with `texture_correlation`)."""
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
    field = object_texture(texture, rng, config.image_size)
    return blend_object(image, coverage, colour, amplitude, field, rng)


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
    image = textured_background(rng, size, config.background_contrast)
    mask = np.zeros((size, size), np.uint8)
    occupancy = Occupancy(size, size)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(count):
        class_id = int(rng.integers(1, config.num_classes + 1))
        placed = place_object(
            functools.partial(_draw_object, config, SHAPE_NAMES[class_id - 1], rng),
            occupancy,
            30,
            min_area=12,
            min_visible=1 - config.max_occlusion,
            min_background=config.min_background,
        )
        if placed is None:
            continue  # no placement found: fewer objects in this image
        coverage, inside = placed
        image = _paint_object(config, class_id, rng, image, coverage, inside)
        mask[inside] = class_id
        occupancy.add(inside)
    labels = sorted(int(v) for v in np.unique(mask))
    if labels[0] != 0:
        labels = [0, *labels]
    return {
        "id": f"shapes_{split}_{index:06d}",
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "mask": mask,
        "labels": labels,
    }


def encode_sample(sample: dict, jpeg_options: dict | None = None) -> tuple[bytes, bytes]:
    """(JPEG bytes of the image, palette-PNG bytes of the mask), exactly as written to disk. `jpeg_options`: PIL's
    JPEG settings (default `JPEG_OPTIONS`)."""
    image_buffer, mask_buffer = io.BytesIO(), io.BytesIO()
    Image.fromarray(sample["image"]).save(image_buffer, format="JPEG", **(jpeg_options or JPEG_OPTIONS))
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
