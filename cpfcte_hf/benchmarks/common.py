# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Small timing helpers for the `scripts/bench_*.py` benchmarks (wall clock, synchronised on accelerators).

Shared machines are noisy: one run of a comparison can say 1.06, the next 1.20. `compare_interleaved` times the
candidates of a comparison in one run, in alternating rounds (full, bare, bare, full, ...), and reports the median
and the spread of every candidate and of every ratio to the baseline, so that a reader sees how far to trust it.

    stats = compare_interleaved({"full": full_step, "backbone": bare_step}, device, repeats=5, baseline="backbone")
    stats["full"]["median_s"], stats["ratios"]["full/backbone"]["median"], stats["ratios"]["full/backbone"]["min"]

`crf_memory_benchmark` measures the pseudo-labelling CRF's time and peak memory on large photos, with and without
`crf_max_side` (`scripts/bench_crf_memory.py`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date

import numpy as np
import torch


def report_results(results: dict, output: str | os.PathLike | None = None) -> None:
    """Prints a benchmark's results as JSON and, with `output`, writes the same JSON there (atomically)."""
    from ..utils.io import atomic_write_text

    text = json.dumps(results, indent=2)
    print(text)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        atomic_write_text(output, text + "\n")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> dict:
    """Runs `fn` `warmup` times untimed, then `steps` times (`compare_interleaved` with one candidate); returns
    median/mean/min seconds per call."""
    timing = compare_interleaved({"call": fn}, device, repeats=steps, warmup=warmup)["call"]
    return {
        "median_s": timing["median_s"],
        "mean_s": statistics.fmean(timing["times_s"]),
        "min_s": timing["min_s"],
        "steps": steps,
    }


def summarize(samples: Sequence[float]) -> dict:
    """Median, min, max and relative spread `(max - min) / median` of repeated measurements (any unit)."""
    if not samples:
        raise ValueError("No samples to summarize.")
    median = statistics.median(samples)
    return {
        "median": median,
        "min": min(samples),
        "max": max(samples),
        "spread": (max(samples) - min(samples)) / median if median else float("nan"),
        "repeats": len(samples),
    }


def compare_interleaved(
    candidates: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    repeats: int = 5,
    calls_per_repeat: int = 1,
    warmup: int = 1,
    items_per_call: int | None = None,
    baseline: str | None = None,
    deadline: float | None = None,
) -> dict:
    """
    Times `candidates` against each other in one run, interleaved.

    Each candidate first runs `warmup` untimed calls; then `repeats` rounds follow, and in every round each candidate
    makes `calls_per_repeat` calls timed together (synchronised on CUDA). The order within a round alternates
    (A B, B A, A B, ...) so that neither candidate always runs after the other. `deadline` (a `time.perf_counter()`
    value) ends the rounds early; at least one round always runs.

    Returns `{name: {"median_s", "min_s", "max_s", "spread", "repeats", "times_s"[, "items_per_s"]}}`, seconds
    per call, plus `"ratios": {"<name>/<baseline>": summarize(per-round ratios)}` for every candidate other than
    `baseline` (default: the last candidate) when there are two or more.
    """
    if not candidates:
        raise ValueError("compare_interleaved needs at least one candidate.")
    if repeats < 1 or calls_per_repeat < 1:
        raise ValueError(f"`repeats` and `calls_per_repeat` must be >= 1, got {repeats} and {calls_per_repeat}.")
    device = torch.device(device)
    names = list(candidates)
    baseline = names[-1] if baseline is None else baseline
    if baseline not in candidates:
        raise ValueError(f"`baseline={baseline!r}` is not one of the candidates {names}.")
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    synchronize(device)
    times = _interleaved_rounds(candidates, device, repeats, calls_per_repeat, deadline)
    results: dict = {name: _timing_record(times[name], items_per_call) for name in names}
    if len(names) > 1:
        results["ratios"] = {
            f"{name}/{baseline}": summarize([a / b for a, b in zip(times[name], times[baseline])])
            for name in names
            if name != baseline
        }
    return results


def _interleaved_rounds(
    candidates: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    calls_per_repeat: int,
    deadline: float | None,
) -> dict[str, list[float]]:
    """Seconds per call of every candidate in each round, the order alternating from round to round."""
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(calls_per_repeat):
                candidates[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / calls_per_repeat)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return times


def _timing_record(times: list[float], items_per_call: int | None) -> dict:
    stats = summarize(times)
    record = {
        "median_s": stats["median"],
        "min_s": stats["min"],
        "max_s": stats["max"],
        "spread": stats["spread"],
        "repeats": stats["repeats"],
        "times_s": times,
    }
    if items_per_call is not None:
        record["items_per_s"] = items_per_call / stats["median"]
    return record


def throughput(timing: dict, items: int) -> dict:
    """Items per second of one `compare_interleaved` candidate that handles `items` per call: at its median time,
    and at its slowest and fastest rounds (`images_per_s`, `images_per_s_min`, `images_per_s_max`)."""
    return {
        "images_per_s": items / timing["median_s"],
        "images_per_s_min": items / timing["max_s"],
        "images_per_s_max": items / timing["min_s"],
    }


def optimizer_step(
    loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, autocast: Callable[[], object]
) -> Callable[[], None]:
    """One training step as a callable to time: the loss under `autocast()` (a context manager factory), backward,
    the optimizer's step, gradients set to None."""

    def step():
        with autocast():
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synthetic_image(rng, height: int = 375, width: int = 500):
    """A smooth background with two coloured blobs, as `(H, W, 3)` uint8: CRF cost depends a little on the content."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90)], -1).astype(np.float32)
    margin = max(2, min(50, min(height, width) // 4))  # 50 px and radii of 30-90 px at VOC's 500x375
    for _ in range(2):
        cy, cx = rng.integers(margin, height - margin), rng.integers(margin, width - margin)
        radius = rng.integers(min(30, margin), min(90, 2 * margin))
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def synthetic_probabilities(rng, classes: Sequence[int], num_labels: int, height: int, width: int):
    """Smooth random `(C, H, W)` float32 maps that are zero outside `classes` (as after class masking)."""
    import numpy as np

    coarse = torch.from_numpy(rng.random((len(classes), 24, 32)).astype(np.float32) ** 3)
    maps = torch.nn.functional.interpolate(coarse[None], size=(height, width), mode="bilinear", align_corners=True)
    maps = maps[0].numpy()
    probabilities = np.zeros((num_labels, height, width), np.float32)
    probabilities[list(classes)] = maps / maps.sum(0, keepdims=True)
    return probabilities


def machine_description(device: torch.device) -> dict:
    """What the numbers were measured on, for the README's Performance section."""
    info = {
        "date": date.today().isoformat(),
        "device": str(device),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    info["cpu_count"] = os.cpu_count()
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)  # a shared machine's contention when measured
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> dict:
    """
    `compare_interleaved` without the ratios: per name, the median, min and all `repeats` times in seconds, the
    callables taking turns (a b, b a, ...) so that drifts in machine load hit them alike, after `warmup` untimed calls.
    """
    results = compare_interleaved(fns, device, repeats=repeats, warmup=warmup)
    return {name: results[name] for name in fns}


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


def _crf_memory_case(
    height: int, width: int, max_side: int | None, num_workers: int, num_labels: int, classes: list[int], seed: int
) -> dict:
    """One case of `crf_memory_benchmark`: a fresh pool, warmed up on tiny images, then one photo per worker."""
    from ..models.cpfcte.crf import CRFPool, DenseCRFConfig, peak_rss_mb
    from ..models.cpfcte.inference import cap_image_side, restore_mask_size

    case = {}
    with CRFPool(DenseCRFConfig(), num_workers=num_workers) as pool:
        rng = np.random.default_rng(seed)
        tiny = synthetic_image(rng, 16, 16)
        for index in range(num_workers):  # with "fork", all workers start at the first submit
            pool.submit(f"warm-up {index}", tiny, synthetic_probabilities(rng, classes, num_labels, 16, 16))
        baseline = [r.extra.get("worker_peak_rss_mb") for r in pool.drain()]
        items = []
        for index in range(num_workers):
            photo = synthetic_image(rng, height, width)
            capped = cap_image_side(photo, max_side)
            maps = synthetic_probabilities(rng, classes, num_labels, *capped.shape[:2])
            items.append((index, capped, maps))
            del photo
        case["crf_size"] = list(items[0][1].shape[:2])
        start = time.perf_counter()
        for key, image, maps in items:
            pool.submit(key, image, maps)
        del items
        results = pool.drain()
        masks = [restore_mask_size(r.mask, (height, width)) for r in results if r.ok]
        case["seconds"] = round(time.perf_counter() - start, 2)
    return case | {
        "masks": len(masks),
        "mask_shape": list(masks[0].shape) if masks else None,
        "errors": [r.error for r in results if not r.ok],
        "worker_peak_rss_mb": round(max(r.extra.get("worker_peak_rss_mb") or 0 for r in results), 1),
        "worker_baseline_rss_mb": round(max(b or 0 for b in baseline), 1),
        "main_peak_rss_mb_so_far": round(peak_rss_mb() or 0, 1),
    }


def crf_memory_benchmark(
    megapixels: Sequence[float] = (0.5, 4, 12, 24),
    max_sides: Sequence[int | None] = (None, 2048),
    num_workers: int = 2,
    num_labels: int = 21,
    present: int = 3,
    skip_uncapped_above: float | None = None,
    seed: int = 0,
) -> dict:
    """
    Time and peak memory of the pseudo-labelling CRF step for large photos, without and with `crf_max_side`.

    Per case (a size in megapixels, 4:3, and a cap): a fresh `CRFPool` of `num_workers` is started and warmed up on
    a tiny image (so its workers' RSS holds only what this process had then), then `num_workers` photos of that size
    go through what `generate_pseudo_labels` does after the model: `cap_image_side`, class maps at the capped size
    (`num_labels` classes, `present` non-zero), the CRF in the pool (one photo per worker, at once) and
    `restore_mask_size` back to the full size. `seconds` is that wall time; `worker_peak_rss_mb` the largest
    `ru_maxrss` of a worker after its photo (shared pages inherited from this process included:
    `worker_baseline_rss_mb` is the same after the tiny warm-up image). Cases with no cap above
    `skip_uncapped_above` MP are listed as skipped.
    """
    cases = []
    for max_side in max_sides:
        for mp in megapixels:
            width = int(round((mp * 1e6 * 4 / 3) ** 0.5))
            height = int(round(width * 3 / 4))
            case = {"megapixels": mp, "image_size": [height, width], "crf_max_side": max_side or None}
            if not max_side and skip_uncapped_above is not None and mp > skip_uncapped_above:
                case["skipped"] = f"no cap above {skip_uncapped_above} MP (memory of this machine)"
                cases.append(case)
                continue
            case.update(_crf_memory_case(height, width, max_side, num_workers, num_labels, list(range(present)), seed))
            cases.append(case)
            print(json.dumps(case), flush=True)
    return {
        "machine": machine_description(torch.device("cpu")),
        "num_workers": num_workers,
        "num_labels": num_labels,
        "present_classes": present,
        "cases": cases,
    }
