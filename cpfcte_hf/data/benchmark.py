# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Loader throughput: images per second through decode + transform + collator in a `DataLoader`."""

import itertools
import time

import torch
from torch.utils.data import DataLoader

from .transforms import AugmentationConfig, EvalTransform, TrainTransform, WeakSegmentationCollator


def loader_throughput(
    dataset,
    *,
    size: int = 384,
    batch_size: int = 16,
    num_workers: int = 2,
    num_batches: int = 20,
    warmup_batches: int = 2,
    train: bool = True,
    augmentation: AugmentationConfig | None = None,
    seed: int = 0,
) -> dict:
    """Iterates `num_batches` batches (after `warmup_batches`, which also pay the worker start-up) and times them.

    The dataset is cycled if it is shorter than the run. Returns `{"images_per_s", "seconds", "images", ...}`.
    """
    num_labels = dataset.features["labels"].feature.num_classes
    if train:
        transform = TrainTransform(num_labels, size=size, augmentation=augmentation)
    else:
        transform = EvalTransform(num_labels, size=size)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset.with_transform(transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=WeakSegmentationCollator(),
        persistent_workers=num_workers > 0,
        generator=generator,
    )
    if len(loader) == 0:
        raise ValueError(f"The dataset has {len(dataset)} rows, fewer than one batch of {batch_size}.")
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for _ in range(warmup_batches):
        next(batches)
    images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(batches)
        images += batch["pixel_values"].shape[0]
    seconds = time.perf_counter() - start
    return {
        "images_per_s": images / seconds,
        "seconds": seconds,
        "images": images,
        "batch_size": batch_size,
        "size": size,
        "num_workers": num_workers,
        "train": train,
        "torch_threads": torch.get_num_threads(),
    }


__all__ = ["loader_throughput"]
