# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The device benchmark's settings (`BenchSettings`: the sizes of every part), its parts and the project's goals."""

from __future__ import annotations

from dataclasses import dataclass, field


VOC_TRAIN_AUG_IMAGES = 10_582
GOAL_HEAD_OVERHEAD = 0.05
GOAL_TRAIN_IMAGES_PER_S = 800.0
GOAL_PSEUDO_LABEL_SECONDS = 600.0
GOAL_PSEUDO_LABEL_CPUS = 16
GOAL_NAMES = (
    "head overhead <= 5 % of the backbone's training step",
    ">= 800 images/s training at 384 on one H200",
    "VOC train_aug pseudo-labels with CRF <= 10 min on a 16-core GPU machine",
)
PARTS = (
    "train",
    "device_augmentation",
    "pseudo_label_model",
    "pseudo_label_end_to_end",
    "deeplab",
    "loader",
    "train_compiled",
)


@dataclass
class BenchSettings:
    """Sizes of every part. The defaults are the real ones (ViT-B/16, 384, 960, ResNet-101); `smoke()` shrinks them."""

    train_size: int = 384
    train_batch_sizes: tuple[int, ...] = (16, 64)
    vit: dict = field(default_factory=dict)  # ViTConfig overrides on top of `vit_b16_384_config`
    num_labels: int = 21
    dtype: str = "bf16"
    attn_implementation: str = "sdpa"
    repeats: int = 5
    calls_per_repeat: int = 3
    warmup: int = 2
    compile_backend: str = "inductor"
    augmentation_batch_size: int = 64
    pseudo_label_size: int = 960
    pseudo_label_batch_size: int = 8
    image_height: int = 375
    image_width: int = 500
    end_to_end_images: int = 256
    deeplab_size: int = 321
    deeplab_batch_size: int = 10
    deeplab_resnet: dict = field(default_factory=dict)  # ResNetConfig overrides (default: ResNet-101)
    loader_workers: tuple[int, ...] = (1, 4, -1)  # -1: all CPUs
    loader_images: int = 512
    loader_batch_size: int = 16
    loader_batches: int = 20
    time_budget_s: float = 420.0
    compile_reserve_s: float = 150.0  # a compiled batch size is not started with less left (compiling takes minutes)

    @classmethod
    def smoke(cls) -> BenchSettings:
        """Tiny sizes: every code path in seconds on a CPU (the numbers mean nothing)."""
        return cls(
            train_size=32,
            train_batch_sizes=(2, 4),
            vit=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8),
            num_labels=4,
            repeats=5,
            calls_per_repeat=1,
            warmup=1,
            compile_backend="eager",
            augmentation_batch_size=4,
            pseudo_label_size=64,
            pseudo_label_batch_size=2,
            image_height=60,
            image_width=80,
            end_to_end_images=4,
            deeplab_size=33,
            deeplab_batch_size=2,
            deeplab_resnet=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1]),
            loader_workers=(0, 1),
            loader_images=8,
            loader_batch_size=4,
            loader_batches=2,
            time_budget_s=120.0,
            compile_reserve_s=0.0,
        )


class SkipPart(Exception):
    """Raised by a part that cannot run on this machine; the message is the recorded reason."""


__all__ = [
    "GOAL_HEAD_OVERHEAD",
    "GOAL_NAMES",
    "GOAL_PSEUDO_LABEL_CPUS",
    "GOAL_PSEUDO_LABEL_SECONDS",
    "GOAL_TRAIN_IMAGES_PER_S",
    "PARTS",
    "VOC_TRAIN_AUG_IMAGES",
    "BenchSettings",
    "SkipPart",
]
