# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Small timing helpers for the `scripts/bench_*.py` benchmarks (wall clock, synchronised on accelerators)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> dict:
    """Runs `fn` `warmup` times untimed, then `steps` times; returns median/mean/min seconds per call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "steps": steps,
    }


def machine_description(device: torch.device) -> dict:
    """What the numbers were measured on, for the README's Performance section."""
    info = {
        "date": date.today().isoformat(),
        "device": str(device),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> dict:
    """
    Times several callables in turn (a, b, a, b, ...) so that drifts in machine load hit them alike; `warmup`
    untimed rounds first. Returns, per name, the median, min and all `repeats` times in seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(values), "min_s": min(values), "times_s": values}
        for name, values in times.items()
    }


# `scripts/bench_train.py --backbone` names -> transformers model types, and the patch size each family is used with.
BENCHMARK_BACKBONES = {
    "vit": ("vit", 16),
    "deit": ("deit", 16),
    "dinov2": ("dinov2", 14),
    "dinov2-reg": ("dinov2_with_registers", 14),
    "clip": ("clip_vision_model", 16),
    "siglip": ("siglip_vision_model", 16),
}
# ViT-S and ViT-B widths (Touvron et al. / Dosovitskiy et al.), 12 blocks each.
BENCHMARK_SIZES = {
    "s": dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536),
    "b": dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def benchmark_backbone_config(name: str, size: str, grid: int):
    """
    A random-weight encoder config of family `name` (a `BENCHMARK_BACKBONES` key) at ViT-S or ViT-B size (`size`
    "s" or "b"), 12 blocks, built for a `grid` x `grid` patch grid (`grid * patch_size` pixels).
    """
    from transformers import AutoConfig

    model_type, patch_size = BENCHMARK_BACKBONES[name]
    values = dict(BENCHMARK_SIZES[size], num_hidden_layers=12, patch_size=patch_size, image_size=grid * patch_size)
    if model_type.startswith("dinov2"):
        values["mlp_ratio"] = values.pop("intermediate_size") // values["hidden_size"]
    if model_type == "dinov2_with_registers":
        values["num_register_tokens"] = 4
    return AutoConfig.for_model(model_type, **values)
