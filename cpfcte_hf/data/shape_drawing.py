# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Drawing the procedural sets (`shapes`, and the VOC-sized `rehearsal` set): shape polygons, anti-aliased
rasterisation, colours, object textures and textured backgrounds, and placing objects so that each stays visible.

What is random is drawn from the `numpy` generator passed in, in a fixed order: an image is a pure function of the
generator's seed.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw


OBJECT_TEXTURES = ("flat", "stripes", "checker", "dots", "gradient", "grain")
BACKGROUND_TEXTURES = ("smooth", "stripes", "checker", "gradient")


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


def shape_parts(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
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


def rasterize(parts, centre, radius, angle, aspect, size, supersample=2) -> np.ndarray:
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


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return 255.0 * np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def object_texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
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


def textured_background(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """A `(size, size, 3)` float image in 0..255: two random colours mixed by a random texture, plus grain."""
    first = hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
    if rng.uniform() < 0.6:
        h, s, v = colorsys.rgb_to_hsv(*(first / 255.0))
        second = hsv(
            h + rng.normal(0, 0.12), np.clip(s + rng.normal(0, 0.2), 0, 1), np.clip(v + rng.normal(0, 0.3), 0.05, 1)
        )
    else:
        second = hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))
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


# ----------------------------------------------------------------------------------------------------------------
# placing objects
# ----------------------------------------------------------------------------------------------------------------


def draw_shape(rng: np.random.Generator, name: str, centre, radius: float, canvas: int) -> np.ndarray:
    """Coverage of shape `name` at `centre` with `radius` on a `(canvas, canvas)` grid, at a random rotation and a
    mild random aspect ratio."""
    parts = shape_parts(name, rng)
    return rasterize(parts, centre, radius, rng.uniform(0, 2 * math.pi), rng.uniform(0.85, 1.18), canvas)


class Occupancy:
    """Which placed object each pixel shows, and each object's area: the rule that keeps earlier objects visible."""

    def __init__(self, height: int, width: int):
        self.owner = np.full((height, width), -1, np.int16)
        self.areas: list[int] = []

    def fits(self, inside: np.ndarray, min_visible: float, min_background: float) -> bool:
        """Whether an object over `inside` leaves every earlier object `min_visible` of its area and the image
        `min_background` of background."""
        owner, covered = self.owner, self.owner[inside]
        visible = all(
            (owner == j).sum() - (covered == j).sum() >= min_visible * self.areas[j] for j in range(len(self.areas))
        )
        return visible and ((owner < 0) & ~inside).mean() >= min_background

    def add(self, inside: np.ndarray) -> None:
        self.owner[inside] = len(self.areas)
        self.areas.append(int(inside.sum()))


def place_object(
    draw_coverage: Callable[[], np.ndarray],
    occupancy: Occupancy,
    attempts: int,
    *,
    min_area: int,
    min_visible: float,
    min_background: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The first of `attempts` draws of `draw_coverage()` that covers at least `min_area` pixels and fits
    `occupancy`: `(coverage, inside)`, or None when none does (the image gets one object fewer)."""
    for _attempt in range(attempts):
        coverage = draw_coverage()
        inside = coverage >= 0.5
        if int(inside.sum()) >= min_area and occupancy.fits(inside, min_visible, min_background):
            return coverage, inside
    return None


def blend_object(image, coverage, colour, amplitude: float, field, rng: np.random.Generator) -> np.ndarray:
    """`image` with an object of `colour`, its brightness modulated by `amplitude * field` plus grain, blended in by
    its `coverage`."""
    fill = colour[None, None, :] * (1.0 + amplitude * field[..., None])
    fill = fill + rng.normal(0, 3.0, size=fill.shape).astype(np.float32)
    alpha = coverage[..., None]
    return image * (1 - alpha) + fill * alpha


__all__ = [
    "BACKGROUND_TEXTURES",
    "OBJECT_TEXTURES",
    "Occupancy",
    "blend_object",
    "draw_shape",
    "hsv",
    "object_texture",
    "place_object",
    "rasterize",
    "shape_parts",
    "textured_background",
]
