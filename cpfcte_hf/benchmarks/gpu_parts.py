# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The parts of the device benchmark (`gpu.run_benchmark` runs them in order): each measures one stage on the device
and returns a dict of its numbers, or raises `SkipPart` with the reason where the machine lacks what it needs."""

from __future__ import annotations

import contextlib
import gc
import importlib
import math
import os
import tempfile
import time

import numpy as np
import torch

from .common import compare_interleaved, optimizer_step, synthetic_image, throughput
from .gpu_settings import VOC_TRAIN_AUG_IMAGES, BenchSettings, SkipPart


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

    steps = {
        name: optimizer_step(
            loss_fn, torch.optim.Adam(model.parameters(), lr=1e-5), lambda: _autocast(device, settings.dtype)
        )
        for name, model, loss_fn in (("full", full, full_loss), ("backbone", backbone, backbone_loss))
    }
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
        free_device_memory(device)
    return results


def _rates(timing: dict, items: int) -> dict:
    return {
        **throughput(timing, items),
        "step_s": timing["median_s"],
        "spread": timing["spread"],
        "repeats": timing["repeats"],
    }


def free_device_memory(device: torch.device) -> None:
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

    from ..models.deeplab_v2.configuration_deeplab import DeepLabV2Config
    from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation

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

    step = optimizer_step(
        lambda: model(pixel_values, labels=labels).loss, optimizer, lambda: _autocast(device, settings.dtype)
    )
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


__all__ = [
    "bench_deeplab",
    "bench_device_augmentation",
    "bench_loader",
    "bench_pseudo_label_end_to_end",
    "bench_pseudo_label_model",
    "bench_train",
]
