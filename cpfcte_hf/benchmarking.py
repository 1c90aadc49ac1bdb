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
