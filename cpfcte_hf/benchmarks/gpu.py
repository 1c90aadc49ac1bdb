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
import contextlib
import gc
import importlib
import json
import math
import os
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .common import compare_interleaved, machine_description, synthetic_image


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


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _require(module: str, what: str) -> None:
    if not _importable(module):
        raise SkipPart(f"`{module}` is not installed here, needed for {what}.")


def _autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


def _peak_memory_gib(device: torch.device, fn) -> float | None:
    """Runs `fn` once and returns the peak GPU memory it allocated (None off CUDA)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def _vit_config(settings: BenchSettings):
    from ..models.cpfcte.configuration_cpfcte import vit_b16_384_config

    return vit_b16_384_config(image_size=settings.train_size, **settings.vit)


def _cpfcte_model(settings: BenchSettings, device: torch.device):
    from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig
    from ..models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    config = CPFCTEConfig(backbone_config=_vit_config(settings), num_labels=settings.num_labels)
    config._attn_implementation = settings.attn_implementation
    return CPFCTEForWeaklySupervisedSegmentation(config).to(device)


def _train_steps(settings: BenchSettings, device: torch.device, batch_size: int, compile_backend: str | None):
    """The full model's and the bare backbone's training steps on the same random batch."""
    from transformers import ViTModel

    torch.manual_seed(0)
    full = _cpfcte_model(settings, device).train()
    backbone = ViTModel(full.config.backbone_config, add_pooling_layer=False).to(device).train()
    size = settings.train_size
    pixel_values = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.zeros(batch_size, settings.num_labels, device=device)
    labels[:, 0] = 1
    labels[torch.arange(batch_size), 1 + torch.arange(batch_size) % (settings.num_labels - 1)] = 1
    if compile_backend:
        full_forward = torch.compile(full, backend=compile_backend)
        backbone_forward = torch.compile(backbone, backend=compile_backend)
    else:
        full_forward, backbone_forward = full, backbone

    def full_loss():
        return full_forward(pixel_values=pixel_values, labels=labels).loss

    def backbone_loss():
        # A loss on every output token, so that the backward pass covers the whole encoder as in the full model.
        return backbone_forward(pixel_values=pixel_values).last_hidden_state.float().pow(2).mean()

    steps = {}
    for name, model, loss_fn in (("full", full, full_loss), ("backbone", backbone, backbone_loss)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

        def step(loss_fn=loss_fn, optimizer=optimizer):
            with _autocast(device, settings.dtype):
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[name] = step
    parameters = {
        "full": full.num_parameters(),
        "backbone": backbone.num_parameters(),
    }
    return steps, parameters


def bench_train(settings: BenchSettings, device: torch.device, deadline: float, compile_backend: str | None = None):
    results = {"image_size": settings.train_size, "dtype": settings.dtype, "attn": settings.attn_implementation}
    if compile_backend:
        results["compile_backend"] = compile_backend
    # Compiled: the largest batch first, the one that decides the images/s goal, in case the budget runs out.
    batch_sizes = sorted(settings.train_batch_sizes, reverse=bool(compile_backend))
    reserve = settings.compile_reserve_s if compile_backend else 0.0
    for batch_size in batch_sizes:
        left = deadline - time.perf_counter()
        if left < max(reserve, 0.0) or left <= 0:
            results[f"batch_{batch_size}"] = {
                "status": "skipped",
                "reason": f"{max(left, 0):.0f} s left of the time budget, {reserve:.0f} s needed to start this one",
            }
            continue
        steps, parameters = _train_steps(settings, device, batch_size, compile_backend)
        started = time.perf_counter()
        # The first call of each pays for compilation (and cuDNN/cuBLAS autotuning); peak memory comes from the second.
        for step in steps.values():
            step()
        first_call_s = time.perf_counter() - started
        memory = {name: _peak_memory_gib(device, step) for name, step in steps.items()}
        timing = compare_interleaved(
            steps,
            device,
            repeats=settings.repeats,
            calls_per_repeat=settings.calls_per_repeat,
            warmup=max(0, settings.warmup - 2),
            items_per_call=batch_size,
            baseline="backbone",
            deadline=deadline,
        )
        ratio = timing["ratios"]["full/backbone"]
        results[f"batch_{batch_size}"] = {
            "full": _rates(timing["full"], batch_size) | {"peak_memory_gib": memory["full"]},
            "backbone": _rates(timing["backbone"], batch_size) | {"peak_memory_gib": memory["backbone"]},
            "head_overhead": {"median": ratio["median"] - 1, "min": ratio["min"] - 1, "max": ratio["max"] - 1},
            "first_calls_s": first_call_s,
            "parameters": parameters,
        }
        del steps
        gc.collect()
        _free(device)
    return results


def _rates(timing: dict, items: int) -> dict:
    return {
        "images_per_s": items / timing["median_s"],
        "images_per_s_min": items / timing["max_s"],
        "images_per_s_max": items / timing["min_s"],
        "step_s": timing["median_s"],
        "spread": timing["spread"],
        "repeats": timing["repeats"],
    }


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_device_augmentation(settings: BenchSettings, device: torch.device, deadline: float):
    _require("kornia", "the batch augmentation")
    _require("datasets", "importing `cpfcte_hf.data`, which holds the batch augmentation")
    from ..data.transforms import BatchAugmentation

    augmentation = BatchAugmentation()
    batch = settings.augmentation_batch_size
    size = settings.train_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    timing = compare_interleaved(
        {"augmentation": lambda: augmentation(images)},
        device,
        repeats=settings.repeats,
        calls_per_repeat=settings.calls_per_repeat,
        warmup=settings.warmup,
        deadline=deadline,
    )
    return {"batch_size": batch, "image_size": size} | _rates(timing["augmentation"], batch)


def _pseudo_label_inputs(settings: BenchSettings, count: int):
    rng = np.random.default_rng(0)
    images = [synthetic_image(rng, settings.image_height, settings.image_width) for _ in range(count)]
    labels = torch.zeros(count, settings.num_labels)
    labels[:, 0] = 1
    for row in range(count):
        labels[row, 1 + rng.choice(settings.num_labels - 1, size=2, replace=False)] = 1
    return images, labels


def bench_pseudo_label_model(settings: BenchSettings, device: torch.device, deadline: float):
    from ..models.cpfcte.inference import predict_class_probabilities

    torch.manual_seed(0)
    model = _cpfcte_model(settings, device).eval()
    batch = settings.pseudo_label_batch_size
    images, labels = _pseudo_label_inputs(settings, batch)

    def run(count, dtype):
        def step():
            with torch.inference_mode(), _autocast(device, dtype):
                predict_class_probabilities(model, images[:count], labels[:count], size=settings.pseudo_label_size)

        return step

    candidates = {"batch_1_fp32": run(1, "fp32"), f"batch_{batch}_fp32": run(batch, "fp32")}
    candidates[f"batch_{batch}_{settings.dtype}"] = run(batch, settings.dtype)
    timing = compare_interleaved(
        candidates, device, repeats=settings.repeats, calls_per_repeat=1, warmup=settings.warmup, deadline=deadline
    )
    results = {
        "inference_size": settings.pseudo_label_size,
        "image_size": [settings.image_height, settings.image_width],
        "includes": "resize + normalise on the CPU, transfer, forward, class masking, upsampling, copy back",
    }
    for name in candidates:
        count = 1 if name.startswith("batch_1_") else batch
        results[name] = {"batch_size": count} | _rates(timing[name], count)
    return results


def bench_pseudo_label_end_to_end(settings: BenchSettings, device: torch.device, deadline: float):
    _require("datasets", "the dataset that `generate_pseudo_labels` reads")
    import datasets
    from PIL import Image

    from ..models.cpfcte.crf import default_num_workers
    from ..prediction.config import PseudoLabelConfig
    from ..prediction.pseudo_labels import generate_pseudo_labels

    with_crf = _importable("pydensecrf.densecrf")
    count = settings.end_to_end_images
    images, labels = _pseudo_label_inputs(settings, count)
    dataset = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(image) for image in images],
            "id": [f"img_{i:05d}" for i in range(count)],
            "labels": [torch.nonzero(row[1:]).flatten().add(1).tolist() for row in labels],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "id": datasets.Value("string"),
                "labels": datasets.List(datasets.Value("int64")),
            }
        ),
    )
    torch.manual_seed(0)
    model = _cpfcte_model(settings, device).eval()
    config = PseudoLabelConfig(
        size=settings.pseudo_label_size,
        batch_size=settings.pseudo_label_batch_size,
        crf=with_crf,
        progress=False,
        num_overlays=0,
    )
    with tempfile.TemporaryDirectory() as out_dir, torch.inference_mode():
        summary = generate_pseudo_labels(model, dataset, out_dir, config, evaluate=False)
    images_per_s = summary.written / summary.seconds
    results = {
        "images": count,
        "written": summary.written,
        "failed": summary.failed,
        "seconds": summary.seconds,
        "images_per_s": images_per_s,
        "crf": with_crf,
        "crf_workers": default_num_workers() if with_crf else 0,
        "batch_size": settings.pseudo_label_batch_size,
        "model_dtype": "fp32 (as `generate_pseudo_labels` runs it)",
        "projected_voc_train_aug_s": VOC_TRAIN_AUG_IMAGES / images_per_s if images_per_s else math.inf,
    }
    if not with_crf:
        results["reason"] = "`pydensecrf` is not installed here: measured without the CRF (model + PNG writing only)."
    return results


def bench_deeplab(settings: BenchSettings, device: torch.device, deadline: float):
    from transformers import ResNetConfig

    from ..deeplab import DeepLabV2Config, DeepLabV2ForSemanticSegmentation

    torch.manual_seed(0)
    if settings.deeplab_resnet:
        config = DeepLabV2Config(
            backbone_config=ResNetConfig(**settings.deeplab_resnet), num_labels=settings.num_labels
        )
    else:
        config = DeepLabV2Config(num_labels=settings.num_labels)
    model = DeepLabV2ForSemanticSegmentation(config).to(device).train()
    batch, size = settings.deeplab_batch_size, settings.deeplab_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, settings.num_labels, (batch, size, size), generator=generator).to(device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        with _autocast(device, settings.dtype):
            loss = model(pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    memory = _peak_memory_gib(device, step)
    timing = compare_interleaved(
        {"deeplab": step},
        device,
        repeats=settings.repeats,
        calls_per_repeat=settings.calls_per_repeat,
        warmup=settings.warmup,
        deadline=deadline,
    )
    return {"batch_size": batch, "image_size": size, "dtype": settings.dtype, "peak_memory_gib": memory} | _rates(
        timing["deeplab"], batch
    )


def bench_loader(settings: BenchSettings, device: torch.device, deadline: float):
    _require("datasets", "the training loader")
    from ..data import build_dataset
    from ..models.cpfcte.crf import default_num_workers
    from .loaders import compare_loaders, write_voc_sized_set

    cpus = default_num_workers()
    workers = sorted({cpus if w < 0 else min(w, cpus) for w in settings.loader_workers})
    with tempfile.TemporaryDirectory() as scratch:
        generated = write_voc_sized_set(
            os.path.join(scratch, "voc"),
            settings.loader_images,
            height=settings.image_height,
            width=settings.image_width,
        )
        dataset = build_dataset("voc", root=generated["root"], split="train", cache_dir=os.path.join(scratch, "cache"))
        loaders = compare_loaders(
            dataset,
            workers,
            size=settings.train_size,
            batch_size=settings.loader_batch_size,
            num_batches=settings.loader_batches,
            repeats=settings.repeats,
            augment_in_loader=False,
            deadline=deadline,
        )
    return {
        "source": f"{generated['images']} generated {settings.image_width}x{settings.image_height} JPEGs "
        f"({generated['mean_jpeg_kib']} KiB each on average)",
        "work": "decode + resize + collate (the augmentation runs on the device)",
        "cpus": cpus,
        "loaders": loaders,
    }


def _goals(results: dict) -> list[dict]:
    """Each goal with the measured value and whether it is met (None where it was not measured or not judged)."""
    overhead_goal, throughput_goal, pseudo_label_goal = GOAL_NAMES
    if results["smoke"] or results["machine"]["device"].split(":")[0] != "cuda":
        return [
            _goal(name, None, None, "not judged: the goals are for a GPU run, this was not one") for name in GOAL_NAMES
        ]
    parts = results["parts"]
    runs = [
        (part, key, value)
        for part in ("train", "train_compiled")
        for key, value in parts.get(part, {}).items()
        if key.startswith("batch_") and isinstance(value, dict) and "full" in value
    ]
    goals = []
    if runs:
        part, key, best = min(runs, key=lambda run: run[2]["head_overhead"]["median"])
        value = best["head_overhead"]["median"]
        note = f"lowest of the runs: {part} {key}, median of {best['full']['repeats']} interleaved repeats"
        goals.append(_goal(overhead_goal, value, value <= GOAL_HEAD_OVERHEAD, note))
        part, key, best = max(runs, key=lambda run: run[2]["full"]["images_per_s"])
        value = best["full"]["images_per_s"]
        goals.append(_goal(throughput_goal, value, value >= GOAL_TRAIN_IMAGES_PER_S, f"{part} {key}, full CPF-CTE"))
    else:
        goals += [_goal(overhead_goal, None, None, "not measured"), _goal(throughput_goal, None, None, "not measured")]
    end_to_end = parts.get("pseudo_label_end_to_end", {})
    projected = end_to_end.get("projected_voc_train_aug_s")
    if projected is None or not end_to_end.get("crf"):
        goals.append(_goal(pseudo_label_goal, projected, None, end_to_end.get("reason", "not measured")))
    else:
        note = f"{end_to_end['crf_workers']} CRF workers"
        if end_to_end["crf_workers"] != GOAL_PSEUDO_LABEL_CPUS:
            note += f" (the goal is stated for {GOAL_PSEUDO_LABEL_CPUS})"
        goals.append(_goal(pseudo_label_goal, projected, projected <= GOAL_PSEUDO_LABEL_SECONDS, note))
    return goals


def _goal(goal: str, value, met, note: str) -> dict:
    return {"goal": goal, "value": value, "met": met, "note": note}


def _table(results: dict) -> str:
    """The human-readable summary printed at the end."""
    machine = results["machine"]
    lines = [
        f"cpfcte_hf device benchmark, {machine['date']}: {machine.get('gpu', machine['device'])}, "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}"
        + (" (SMOKE: tiny sizes, numbers mean nothing)" if results["smoke"] else ""),
        "",
        f"{'part':<24} {'what':<34} {'median':>12} {'spread':>8}  note",
    ]

    def row(part, what, value, spread=None, note=""):
        value_text = f"{value:12.4g}" if isinstance(value, (int, float)) and value is not None else f"{'-':>12}"
        spread_text = f"{spread:8.1%}" if isinstance(spread, float) else f"{'':>8}"
        lines.append(f"{part:<24} {what:<34} {value_text} {spread_text}  {note}")

    for part, result in results["parts"].items():
        status = result.get("status")
        if status != "ok":
            error_lines = result.get("error", "").strip().splitlines() or [""]
            row(part, status, None, note=result.get("reason") or error_lines[-1])
            continue
        if part in ("train", "train_compiled"):
            for key, value in result.items():
                if not key.startswith("batch_"):
                    continue
                if "full" not in value:
                    row(part, f"{key}", None, note=value.get("reason", ""))
                    continue
                for model in ("full", "backbone"):
                    memory = value[model]["peak_memory_gib"]
                    row(
                        part,
                        f"{key} {model} images/s",
                        value[model]["images_per_s"],
                        value[model]["spread"],
                        f"peak {memory:.1f} GiB" if memory is not None else "",
                    )
                overhead = value["head_overhead"]
                row(
                    part,
                    f"{key} head overhead, %",
                    100 * overhead["median"],
                    None,
                    f"min {overhead['min']:+.1%}, max {overhead['max']:+.1%}",
                )
        elif part == "device_augmentation":
            row(part, f"batch {result['batch_size']} images/s", result["images_per_s"], result["spread"])
        elif part == "pseudo_label_model":
            for key, value in result.items():
                if key.startswith("batch_"):
                    row(part, f"{key} images/s", value["images_per_s"], value["spread"])
        elif part == "pseudo_label_end_to_end":
            row(
                part,
                "images/s",
                result["images_per_s"],
                None,
                f"{result['images']} images, CRF={'on' if result['crf'] else 'OFF'}",
            )
            row(part, "projected VOC train_aug, s", result["projected_voc_train_aug_s"])
        elif part == "deeplab":
            row(part, f"batch {result['batch_size']} images/s", result["images_per_s"], result["spread"])
        elif part == "loader":
            for loader in result["loaders"]:
                row(
                    part,
                    f"{loader['num_workers']} workers images/s",
                    loader["images_per_s"],
                    loader["spread"],
                    f"{loader['images_per_s_per_worker']:.0f} per worker",
                )
    lines.append("")
    for goal in results["goals"]:
        verdict = {True: "MET", False: "NOT MET", None: "-"}[goal["met"]]
        value = goal["value"]
        value_text = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        lines.append(f"goal: {goal['goal']}: {verdict} (value {value_text}; {goal['note']})")
    return "\n".join(lines)


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
        _free(device)
        result["seconds"] = time.perf_counter() - part_started
        results["parts"][part] = result
    results["seconds"] = time.perf_counter() - started
    results["goals"] = _goals(results)
    return results


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def main(argv=None) -> int:
    """Command line entry (`scripts/bench_gpu.py`, `cpfcte-hf bench`): parses `argv`, runs, prints, writes; returns 0.

    For the results as a dict, call `run_benchmark(settings, device)`.
    """
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
    if args.time_budget is not None:
        settings.time_budget_s = args.time_budget
    if args.repeats is not None:
        settings.repeats = args.repeats
    if args.end_to_end_images is not None:
        settings.end_to_end_images = args.end_to_end_images
    if args.dtype is not None:
        settings.dtype = args.dtype
    if settings.repeats < 5:
        parser.error(f"--repeats {settings.repeats}: comparisons need at least 5 repeats to say anything.")

    results = _json_safe(run_benchmark(settings, device, args.parts, smoke=args.smoke))
    print(_table(results), flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(json.dumps(results, indent=2) + "\n")
        print(f"[bench_gpu] wrote {args.output}", flush=True)
    return 0


__all__ = ["BenchSettings", "PARTS", "main", "run_benchmark"]
