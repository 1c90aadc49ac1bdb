# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A stand-in for PASCAL VOC 2012 + SBD at full scale, drawn from the procedural shapes: the rehearsal set.

`write_voc_rehearsal(out_dir)` (command: `cpfcte-hf make-voc-rehearsal --output_dir DIR`) writes what the real
data bundle holds, in its layout, so that `cpfcte-hf run --config voc --data_root DIR` reads it unchanged::

    DIR/VOCdevkit/VOC2012/JPEGImages/<id>.jpg                 10,582 train_aug + 1,449 val JPEGs
    DIR/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png       every image's mask (palette PNG, 255 = object borders)
    DIR/VOCdevkit/VOC2012/SegmentationClass/<id>.png          the masks of `train` and `val` (as VOC ships them)
    DIR/VOCdevkit/VOC2012/ImageSets/Segmentation/{train_aug,train,val}.txt
    DIR/VOCdevkit/VOC2012/cls_labels_onehot.npy               id -> float32[20] tags (the AFA/ToCo file)
    DIR/fingerprint.json, DIR/rehearsal.json                  the settings; counts, sizes and bytes written

What is like VOC, and what is assumed (we have no VOC copy here to measure):

* counts: 10,582 `train_aug` and 1,449 `val` images by default (VOC 2012 + SBD); `train` is the first
  1,464/10,582 of `train_aug` (VOC's `train` is a subset of `train_aug`);
* 21 classes, named as VOC's (background + 20); the objects are the procedural shapes of `data/shapes.py` (drawn
  by `data/shape_drawing.py`): classes 1-10 are its ten shapes, classes 11-20 the same ten shapes always striped
  (so a class is told by its shape and, for the second ten, its texture; the set exists to measure scale, not
  accuracy);
* image sizes (assumed, VOC-like): the longer side is 500 px for 96 % of images, else uniform in 300..499;
  landscape 72 %, portrait 28 %; long/short side ratio 4:3 for 60 %, 3:2 for 22 %, 5:4 for 6 %, square for 4 %,
  uniform in 1.0..2.0 for 8 %. So about 500x375 and 375x500, with the variety of a photo collection;
* 1-4 objects per image, radius 10-32 % of the shorter side (VOC's objects are large);
* masks: palette PNGs with VOC's colours; 255 on a band about 5 px wide along every object outline (VOC's "void"
  borders), so the tags come from the mask with 255 ignored;
* JPEG quality 90 with 4:2:0 chroma subsampling (assumed: a typical Flickr photo of VOC's era).

Every image is a pure function of `(seed, split, index)`: image `i` is the same whatever the counts, so a 1,000-image
tree is the first 1,000 images of the 10,582-image one. Files are written atomically and images already there are
kept, so an interrupted run resumes where it stopped, and a tree grows: asking a 1,000-image tree for 3,000 draws
only the 2,000 new ones (asking for fewer rewrites the lists; the images past them stay, unlisted).
`fingerprint.json` records what decides the bytes (seed, version, JPEG and border settings), and a directory made
with others is refused (or cleared with `overwrite=True`). The lists, tags and `rehearsal.json` are written last: a
tree with its lists is complete.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ..models.cpfcte.class_names import VOC_CLASSES
from ..utils.fingerprint import check_fingerprint, record_fingerprint
from ..utils.io import atomic_write_bytes, atomic_write_text
from . import shape_drawing as drawing
from .shapes import SHAPE_NAMES, encode_sample


VOC_TRAIN_AUG_IMAGES = 10582
VOC_VAL_IMAGES = 1449
VOC_TRAIN_IMAGES = 1464
REHEARSAL_VERSION = "voc-rehearsal-1"
JPEG_OPTIONS = {"quality": 90, "subsampling": 2}  # 4:2:0
BORDER_WIDTH = 5  # the 255 band along object outlines, in pixels (a 5x5 min/max filter)
SPLITS = {"train_aug": 10, "val": 11}  # split -> the seed-sequence code of its images
ID_PREFIX = {"train_aug": "2010", "val": "2012"}  # VOC-style ids: YEAR_NNNNNN
VOC_DIR = os.path.join("VOCdevkit", "VOC2012")
STRIPED = "stripes"


def image_id(split: str, index: int) -> str:
    return f"{ID_PREFIX[split]}_{index:06d}"


def sample_image_size(rng: np.random.Generator) -> tuple[int, int]:
    """`(width, height)` of one image from the (assumed) VOC-like distribution of the module docstring."""
    long_side = 500 if rng.uniform() < 0.96 else int(rng.integers(300, 500))
    pick = rng.uniform()
    if pick < 0.60:
        ratio = 4 / 3
    elif pick < 0.82:
        ratio = 3 / 2
    elif pick < 0.88:
        ratio = 5 / 4
    elif pick < 0.92:
        ratio = 1.0
    else:
        ratio = rng.uniform(1.0, 2.0)
    short_side = int(round(long_side / ratio))
    return (long_side, short_side) if rng.uniform() < 0.72 else (short_side, long_side)


def _colour(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """Half the objects take their class's hue (+ noise), the others a random one (as the shapes do)."""
    hue = (class_id - 1) / 20 + rng.normal(0, 0.03) if rng.uniform() < 0.5 else rng.uniform()
    return drawing.hsv(hue, rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))


def _draw_object(rng: np.random.Generator, name: str, width: int, height: int) -> np.ndarray:
    """One try at placing shape `name` on a `width` x `height` image: its coverage at a random size and position."""
    radius = rng.uniform(0.10, 0.32) * min(width, height)
    margin = 0.8 * radius
    centre = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
    return drawing.draw_shape(rng, name, centre, radius, max(width, height))[:height, :width]


def render_rehearsal_sample(seed: int, split: str, index: int) -> dict:
    """Image `index` of `split` ("train_aug" or "val").

    Returns:
        `{"id", "image": (H, W, 3) uint8, "mask": (H, W) uint8 with 255 borders, "labels": sorted foreground
        class ids present in the mask}`.
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    width, height = sample_image_size(rng)
    side = max(width, height)  # drawn on a square canvas (the shapes' helpers), then cropped to the image
    image = drawing.textured_background(rng, side)[:height, :width]
    labels_map = np.zeros((height, width), np.uint8)
    occupancy = drawing.Occupancy(height, width)
    for _ in range(int(rng.integers(1, 5))):
        class_id = int(rng.integers(1, 21))
        name = SHAPE_NAMES[(class_id - 1) % len(SHAPE_NAMES)]
        draw = functools.partial(_draw_object, rng, name, width, height)
        placed = drawing.place_object(draw, occupancy, 20, min_area=200, min_visible=0.65, min_background=0.25)
        if placed is None:
            continue  # no placement found: one object fewer
        coverage, inside = placed
        if class_id > len(SHAPE_NAMES):
            texture = STRIPED
        else:
            texture = drawing.OBJECT_TEXTURES[rng.integers(len(drawing.OBJECT_TEXTURES))]
            texture = "flat" if texture == STRIPED else texture
        amplitude = 0.0 if texture == "flat" else rng.uniform(0.25, 0.4)
        field = drawing.object_texture(texture, rng, side)[:height, :width]
        image = drawing.blend_object(image, coverage, _colour(class_id, rng), amplitude, field, rng)
        labels_map[inside] = class_id
        occupancy.add(inside)
    mask = add_void_borders(labels_map)
    return {
        "id": image_id(split, index),
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "mask": mask,
        "labels": mask_labels(mask),
    }


def add_void_borders(mask: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """`mask` with 255 wherever a `width x width` window around a pixel holds two classes (VOC's void band)."""
    image = Image.fromarray(mask)
    high = np.asarray(image.filter(ImageFilter.MaxFilter(width)))
    low = np.asarray(image.filter(ImageFilter.MinFilter(width)))
    return np.where(high != low, np.uint8(255), mask)


def mask_labels(mask: np.ndarray) -> list[int]:
    """Foreground class ids present in a mask (0 and 255 left out)."""
    return [int(v) for v in np.unique(mask) if 0 < v < 255]


def _write_one(job: tuple) -> tuple[str, list[int], tuple[int, int], bool]:
    """Renders and writes one image and its mask unless both are there; returns (id, labels, (w, h), written)."""
    voc_dir, seed, split, index = job
    item_id = image_id(split, index)
    image_path = os.path.join(voc_dir, "JPEGImages", item_id + ".jpg")
    mask_path = os.path.join(voc_dir, "SegmentationClassAug", item_id + ".png")
    if os.path.isfile(image_path) and os.path.isfile(mask_path):
        with Image.open(mask_path) as existing:
            mask = np.asarray(existing)
        return item_id, mask_labels(mask), (mask.shape[1], mask.shape[0]), False
    sample = render_rehearsal_sample(seed, split, index)
    image_bytes, mask_bytes = encode_sample(sample, JPEG_OPTIONS)
    atomic_write_bytes(image_path, image_bytes)  # the mask last: a mask means its image is complete
    atomic_write_bytes(mask_path, mask_bytes)
    return item_id, sample["labels"], (sample["mask"].shape[1], sample["mask"].shape[0]), True


def _progress_printer(total: int, every: float = 10.0) -> Callable[[int], None]:
    start, last = time.perf_counter(), [0.0]

    def report(done: int) -> None:
        now = time.perf_counter() - start
        if done == total or now - last[0] >= every:
            last[0] = now
            rate = done / now if now > 0 else 0.0
            print(f"[make-voc-rehearsal] {done}/{total} images, {rate:.1f} images/s", flush=True)

    return report


def _tree_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    return total


def write_voc_rehearsal(
    out_dir: str,
    *,
    train_images: int = VOC_TRAIN_AUG_IMAGES,
    val_images: int = VOC_VAL_IMAGES,
    seed: int = 0,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Writes (or completes) the rehearsal tree in `out_dir`; see the module docstring.

    Args:
        out_dir: the folder that will hold `VOCdevkit/VOC2012` (pass it as `--data_root`).
        train_images, val_images: images in `train_aug` and `val` (at least 1 each).
        seed: the seed; `(seed, split, index)` determines each image.
        num_workers: processes drawing images (default: the CPUs this process may use; 0 or 1: this process).
        overwrite: clear a tree made with other settings instead of refusing it.
        progress: print a progress line every 10 s.

    Returns:
        The summary also written to `rehearsal.json`: counts, images written now and found done, the size
        histogram, bytes of images and masks, seconds.
    """
    if train_images < 1 or val_images < 1:
        raise ValueError(f"train_images and val_images must be at least 1, got {train_images} and {val_images}.")
    # what decides each image's bytes; not the counts: image i does not depend on them, so a tree can grow
    settings = {"generator": REHEARSAL_VERSION, "seed": seed, "jpeg": JPEG_OPTIONS, "border_width": BORDER_WIDTH}
    voc_dir = _prepare_tree(out_dir, settings, overwrite)
    start = time.perf_counter()
    jobs = [(voc_dir, seed, "train_aug", i) for i in range(train_images)]
    jobs += [(voc_dir, seed, "val", i) for i in range(val_images)]
    workers = len(os.sched_getaffinity(0)) if num_workers is None else num_workers
    results = _write_images(jobs, workers, progress)
    ids = _split_ids(train_images, val_images)
    _copy_class_masks(voc_dir, ids["train"] + ids["val"])
    _write_tags(voc_dir, results)
    list_dir = os.path.join(voc_dir, "ImageSets", "Segmentation")
    for name in ("train", "val", "train_aug"):  # train_aug last: its list marks a complete tree
        atomic_write_text(os.path.join(list_dir, f"{name}.txt"), "\n".join(ids[name]) + "\n")
    summary = {
        "root": out_dir,
        "voc_dir": voc_dir,
        "settings": {**settings, "train_images": train_images, "val_images": val_images},
        "splits": {name: len(values) for name, values in ids.items()},
        **_written_counts(results),
        "seconds": round(time.perf_counter() - start, 2),
        "workers": workers,
        "image_bytes": _tree_bytes(os.path.join(voc_dir, "JPEGImages")),
        "mask_bytes": _tree_bytes(os.path.join(voc_dir, "SegmentationClassAug"))
        + _tree_bytes(os.path.join(voc_dir, "SegmentationClass")),
        **_image_statistics(results),
    }
    atomic_write_text(os.path.join(out_dir, "rehearsal.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def _prepare_tree(out_dir: str, settings: dict, overwrite: bool) -> str:
    """The tree's folders, made after checking (or, with `overwrite`, clearing) a tree made with other settings;
    returns its VOC folder."""
    voc_dir = os.path.join(out_dir, VOC_DIR)
    has_content = os.path.isdir(os.path.join(voc_dir, "JPEGImages"))
    status = check_fingerprint(out_dir, settings, overwrite=overwrite, has_content=has_content)
    if status == "overwrite":
        shutil.rmtree(os.path.join(out_dir, "VOCdevkit"), ignore_errors=True)
    for folder in (
        "JPEGImages",
        "SegmentationClassAug",
        "SegmentationClass",
        os.path.join("ImageSets", "Segmentation"),
    ):
        os.makedirs(os.path.join(voc_dir, folder), exist_ok=True)
    record_fingerprint(out_dir, settings)
    return voc_dir


def _write_images(jobs: list[tuple], workers: int, progress: bool) -> list[tuple]:
    """`_write_one` of every job, in order, over `workers` processes (1 or fewer: in this one)."""
    report = _progress_printer(len(jobs)) if progress else (lambda done: None)
    results = []
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_write_one, jobs, chunksize=16):
                results.append(result)
                report(len(results))
    else:
        for job in jobs:
            results.append(_write_one(job))
            report(len(results))
    return results


def _split_ids(train_images: int, val_images: int) -> dict[str, list[str]]:
    """The ids of `train_aug`, `val`, and `train` (the first of `train_aug`, in VOC's proportion)."""
    ids = {
        split: [image_id(split, i) for i in range(count)]
        for split, count in (("train_aug", train_images), ("val", val_images))
    }
    train_count = min(train_images, max(1, round(train_images * VOC_TRAIN_IMAGES / VOC_TRAIN_AUG_IMAGES)))
    ids["train"] = ids["train_aug"][:train_count]
    return ids


def _copy_class_masks(voc_dir: str, ids: list[str]) -> None:
    """VOC ships the masks of train and val in `SegmentationClass` too."""
    for item_id in ids:
        source = os.path.join(voc_dir, "SegmentationClassAug", item_id + ".png")
        target = os.path.join(voc_dir, "SegmentationClass", item_id + ".png")
        if not os.path.isfile(target) or os.path.getsize(target) != os.path.getsize(source):
            with open(source, "rb") as handle:
                atomic_write_bytes(target, handle.read())


def _write_tags(voc_dir: str, results: list[tuple]) -> None:
    """`cls_labels_onehot.npy`: id -> float32[20] tags (the AFA/ToCo file)."""
    table = {}
    for item_id, labels, _, _ in results:
        vector = np.zeros(len(VOC_CLASSES) - 1, np.float32)
        vector[[label - 1 for label in labels]] = 1.0
        table[item_id] = vector
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=True)
    atomic_write_bytes(os.path.join(voc_dir, "cls_labels_onehot.npy"), buffer.getvalue())


def _written_counts(results: list[tuple]) -> dict:
    return {
        "written": sum(1 for result in results if result[3]),
        "found_done": sum(1 for result in results if not result[3]),
    }


def _image_statistics(results: list[tuple]) -> dict:
    """Classes per image, and how many images have each size (the most common first)."""
    sizes: dict[str, int] = {}
    for _, _, (width, height), _ in results:
        sizes[f"{width}x{height}"] = sizes.get(f"{width}x{height}", 0) + 1
    return {
        "classes_per_image": round(float(np.mean([len(result[1]) for result in results])), 3),
        "image_sizes": dict(sorted(sizes.items(), key=lambda item: -item[1])),
    }


__all__ = [
    "VOC_TRAIN_AUG_IMAGES",
    "VOC_VAL_IMAGES",
    "add_void_borders",
    "render_rehearsal_sample",
    "sample_image_size",
    "write_voc_rehearsal",
]
