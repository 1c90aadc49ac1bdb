# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""
The one-call device benchmark: everything a GPU machine should tell us, in one command of at most 8 minutes.

    python scripts/bench_gpu.py --device cuda --output outputs/bench/gpu.json    # `make bench-gpu`
    python scripts/bench_gpu.py --smoke --output /tmp/gpu_smoke.json            # the same code paths, CPU, seconds

Random weights, synthetic VOC-sized data, no downloads. Parts, in the order they run (a global deadline,
`--time-budget`, skips the parts it would cut, with the reason recorded; torch.compile, the slowest to start, runs
last):

* `train`: stage-1 training step (forward, Top-K BCE loss, backward, Adam step) at 384 px, bf16 autocast, SDPA, batch
  16 and 64: the full CPF-CTE and the bare `ViTModel` interleaved, median and spread of the images/s and of the
  full/bare ratio (the head overhead), peak GPU memory of each; every weight trainable (the costliest stage);
* `device_augmentation`: `BatchAugmentation` (ViT-PCM's augmentation + normalisation) on the device, batch 64;
* `pseudo_label_model`: `predict_class_probabilities` at 960 px on 500x375 images, batch 1 and batched;
* `pseudo_label_end_to_end`: `generate_pseudo_labels` (model, CRF pool on all CPU cores, PNG writing) on a few
  hundred images, and the projected time for VOC train_aug (10,582 images);
* `deeplab`: DeepLab-v2 ResNet-101 training step (forward, loss, backward, SGD step) at 321 px, batch 10, bf16;
* `loader`: the training loader's images/s with W = 1, 4 and all-cores workers that decode and resize 500x375 JPEGs
  (the augmentation runs on the device);
* `train_compiled`: `train` again with `torch.compile`.

A part whose dependency is missing on the machine (`datasets`, `kornia`, `pydensecrf`) is skipped with the reason, or
runs without it (the end-to-end pass without the CRF), and a part that fails records its error: one bad part never
costs the others. The results are reported against the project's goals (not asserted): head overhead <= 5 % of the
backbone's training step; >= 800 images/s training at 384 on one H200; VOC train_aug pseudo-labels with CRF <= 10 min
on a 16-core GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import traceback
from dataclasses import asdict

import torch

from .common import machine_description
from .gpu_parts import (
    bench_deeplab,
    bench_device_augmentation,
    bench_loader,
    bench_pseudo_label_end_to_end,
    bench_pseudo_label_model,
    bench_train,
    free_device_memory,
)
from .gpu_settings import (  # noqa: F401 - the goals and sizes: importable here too
    GOAL_HEAD_OVERHEAD,
    GOAL_NAMES,
    GOAL_PSEUDO_LABEL_CPUS,
    GOAL_PSEUDO_LABEL_SECONDS,
    GOAL_TRAIN_IMAGES_PER_S,
    PARTS,
    VOC_TRAIN_AUG_IMAGES,
    BenchSettings,
    SkipPart,
)
from .gpu_table import goals, json_safe, summary_table


def run_benchmark(settings: BenchSettings, device: torch.device, parts=PARTS, smoke: bool = False) -> dict:
    """Runs the `parts` in order under `settings.time_budget_s`; returns the results (see `main`)."""
    started = time.perf_counter()
    deadline = started + settings.time_budget_s
    results = {
        "machine": machine_description(device),
        "smoke": smoke,
        "settings": asdict(settings),
        "parts": {},
    }
    # The library's defaults are kept (no TF32 switch here): the fp32 numbers are what `generate_pseudo_labels` gets.
    results["machine"]["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":
        results["machine"]["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    functions = {
        "train": lambda: bench_train(settings, device, deadline),
        "device_augmentation": lambda: bench_device_augmentation(settings, device, deadline),
        "pseudo_label_model": lambda: bench_pseudo_label_model(settings, device, deadline),
        "pseudo_label_end_to_end": lambda: bench_pseudo_label_end_to_end(settings, device, deadline),
        "deeplab": lambda: bench_deeplab(settings, device, deadline),
        "loader": lambda: bench_loader(settings, device, deadline),
        "train_compiled": lambda: bench_train(settings, device, deadline, compile_backend=settings.compile_backend),
    }
    for part in parts:
        part_started = time.perf_counter()
        if part_started > deadline:
            results["parts"][part] = {
                "status": "skipped",
                "reason": f"the global time budget of {settings.time_budget_s:.0f} s was spent before this part",
            }
            continue
        print(f"[bench_gpu] {part} ({part_started - started:.0f} s in)", flush=True)
        try:
            result = {"status": "ok"} | functions[part]()
        except SkipPart as reason:
            result = {"status": "skipped", "reason": str(reason)}
        except Exception:  # noqa: BLE001 - one broken part must not cost the numbers of the others
            result = {"status": "error", "error": traceback.format_exc(limit=4)}
        gc.collect()  # the part's models and optimizers go before the next part starts
        free_device_memory(device)
        result["seconds"] = time.perf_counter() - part_started
        results["parts"][part] = result
    results["seconds"] = time.perf_counter() - started
    results["goals"] = goals(results)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: every code path in seconds")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument(
        "--time-budget", type=float, default=None, help="seconds before the remaining parts are skipped"
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per comparison (>= 5)")
    parser.add_argument("--end-to-end-images", type=int, default=None, help="images of the end-to-end pass")
    parser.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="autocast dtype of the training steps (bf16)"
    )
    return parser


def main(argv=None) -> int:
    """Command line entry (`scripts/bench_gpu.py`, `cpfcte-hf bench`): parses `argv`, runs, prints, writes; returns 0.

    For the results as a dict, call `run_benchmark(settings, device)`.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    settings = BenchSettings.smoke() if args.smoke else BenchSettings()
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here (use --smoke to try the code on a CPU).")
    if device.type != "cuda" and not args.smoke:
        print(
            "[bench_gpu] no CUDA device: running the full-size parts on the CPU will take very long; "
            "use --smoke to check the code paths.",
            flush=True,
        )
    for option, name in (
        ("time_budget", "time_budget_s"),
        ("repeats", "repeats"),
        ("end_to_end_images", "end_to_end_images"),
        ("dtype", "dtype"),
    ):
        if getattr(args, option) is not None:
            setattr(settings, name, getattr(args, option))
    if settings.repeats < 5:
        parser.error(f"--repeats {settings.repeats}: comparisons need at least 5 repeats to say anything.")

    results = json_safe(run_benchmark(settings, device, args.parts, smoke=args.smoke))
    print(summary_table(results), flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(json.dumps(results, indent=2) + "\n")
        print(f"[bench_gpu] wrote {args.output}", flush=True)
    return 0


__all__ = ["BenchSettings", "PARTS", "main", "run_benchmark"]
