# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Loader throughput: images per second through decode + transform + collator in a `DataLoader`."""

import itertools
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ..data.shapes import write_shapes_voc
from ..data.transforms import AugmentationConfig, EvalTransform, TrainTransform, WeakSegmentationCollator
from .common import compare_interleaved, throughput


def write_voc_sized_set(
    root: str, num_images: int, *, height: int = 375, width: int = 500, quality: int = 90, seed: int = 0
) -> dict:
    """
    A VOC-layout folder of `num_images` JPEGs of VOC's typical size (500x375) for loader benchmarks, read back with
    `load_voc(root, "train")`: the procedural shapes set, resized to `height` x `width` (masks with NEAREST), with
    Gaussian pixel noise (std 8) so that the JPEGs compress about as badly as photographs (decode time grows with the
    compressed size). Returns `{"root", "images", "image_size": [h, w], "mean_jpeg_kib"}`.
    """
    write_shapes_voc(root, num_train=num_images, num_val=1, image_size=max(height, width))
    rng = np.random.default_rng(seed)
    image_dir, mask_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "SegmentationClass")
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt")) as handle:
        ids = handle.read().split()
    sizes = []
    for image_id in ids:
        image_path = os.path.join(image_dir, f"{image_id}.jpg")
        image = np.asarray(Image.open(image_path).convert("RGB").resize((width, height), Image.BILINEAR))
        noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(image_path, quality=quality)
        sizes.append(os.path.getsize(image_path))
        mask_path = os.path.join(mask_dir, f"{image_id}.png")
        Image.open(mask_path).resize((width, height), Image.NEAREST).save(mask_path)
    return {
        "root": root,
        "images": len(ids),
        "image_size": [height, width],
        "mean_jpeg_kib": round(float(np.mean(sizes)) / 1024, 1),
    }


def _endless_batches(dataset, *, size, batch_size, num_workers, train, augmentation, augment_in_loader, seed):
    num_labels = dataset.features["labels"].feature.num_classes
    if train:
        transform = TrainTransform(
            num_labels, size=size, augmentation=augmentation, augment_in_loader=augment_in_loader
        )
    else:
        transform = EvalTransform(num_labels, size=size)
    loader = DataLoader(
        dataset.with_transform(transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=WeakSegmentationCollator(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    if len(loader) == 0:
        raise ValueError(f"The dataset has {len(dataset)} rows, fewer than one batch of {batch_size}.")
    return itertools.chain.from_iterable(itertools.repeat(loader))


def compare_loaders(
    dataset,
    workers: list[int],
    *,
    size: int = 384,
    batch_size: int = 16,
    num_batches: int = 10,
    warmup_batches: int = 2,
    repeats: int = 5,
    train: bool = True,
    augmentation: AugmentationConfig | None = None,
    augment_in_loader: bool = True,
    seed: int = 0,
    deadline: float | None = None,
) -> list[dict]:
    """
    Images/s of one `DataLoader` per entry of `workers`: after `warmup_batches` (which also pay the worker start-up),
    `repeats` windows of `num_batches` batches each, timed back to back; the median and spread over the windows.
    The dataset is cycled if it is shorter than the run. With `augment_in_loader=False` the workers only decode
    and resize (the augmentation then runs on the training device).

    Unlike model steps, loaders are measured one after the other, not interleaved: the workers of an idle loader
    keep filling their prefetch queue, which would credit the next window with batches made during another's.

    Returns one dict per worker count: `{"images_per_s" (median), "images_per_s_min", "images_per_s_max", "spread",
    "images_per_s_per_worker", "main_process_cpu_s_per_image", "repeats", ...}`. With 0 workers,
    `1 / main_process_cpu_s_per_image` is the images/s of one uncontended core.
    """
    results = []
    images = num_batches * batch_size
    for num_workers in workers:
        stream = _endless_batches(
            dataset,
            size=size,
            batch_size=batch_size,
            num_workers=num_workers,
            train=train,
            augmentation=augmentation,
            augment_in_loader=augment_in_loader,
            seed=seed,
        )
        rates = _time_stream(stream, num_batches, warmup_batches, repeats, deadline, images, num_workers)
        del stream  # stops the workers before the next loader starts its own
        results.append(
            {
                **rates,
                "images_per_repeat": images,
                "batch_size": batch_size,
                "size": size,
                "num_workers": num_workers,
                "train": train,
                "augment_in_loader": augment_in_loader if train else None,
                "torch_threads": torch.get_num_threads(),
            }
        )
    return results


def _time_stream(
    stream, num_batches: int, warmup_batches: int, repeats: int, deadline, images: int, num_workers: int
) -> dict:
    """Images/s of `repeats` windows of `num_batches` batches drawn from `stream` after `warmup_batches` (also per
    one of its `num_workers`), and the CPU seconds per image of this process."""

    def draw():
        for _ in range(num_batches):
            next(stream)

    for _ in range(warmup_batches):
        next(stream)
    cpu_start = time.process_time()
    timing = compare_interleaved({"loader": draw}, repeats=repeats, warmup=0, deadline=deadline)["loader"]
    # CPU seconds of this process per image: with 0 workers, the whole cost of an image on one core, which a
    # shared machine's wall time cannot give; with workers, what collating and receiving batches costs here.
    main_cpu_per_image = (time.process_time() - cpu_start) / (images * timing["repeats"])
    rates = throughput(timing, images)
    return {
        **rates,
        "spread": timing["spread"],
        "images_per_s_per_worker": rates["images_per_s"] / max(1, num_workers),
        "main_process_cpu_s_per_image": main_cpu_per_image,
        "repeats": timing["repeats"],
    }


def loader_throughput(dataset, *, num_workers: int = 2, **kwargs) -> dict:
    """`compare_loaders` for one worker count (same keyword arguments); returns its one result."""
    return compare_loaders(dataset, [num_workers], **kwargs)[0]


__all__ = ["compare_loaders", "loader_throughput", "write_voc_sized_set"]
