# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Size and speed of DeepLab-v2: parameter counts and the time of one training step (forward + backward)."""

from __future__ import annotations

import platform

import torch

from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation
from .common import compare_interleaved, parameter_count


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """`{"total", "trainable", "backbone", "classifier"}` parameter counts of DeepLab-v2 (frozen BatchNorm is not
    trainable); of another transformers segmenter (a preset's `model_type: segformer`, say) `total` and `trainable`."""
    counts = {"total": model.num_parameters(), "trainable": model.num_parameters(only_trainable=True)}
    if isinstance(model, DeepLabV2ForSemanticSegmentation):
        counts.update(backbone=model.resnet.num_parameters(), classifier=parameter_count(model.aspp))
    return counts


def training_step_flops(model: DeepLabV2ForSemanticSegmentation, batch_size: int = 2, size: int = 321) -> int:
    """Floating-point operations of one forward (with the loss) + backward, counted by `torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.train()
    device = next(model.parameters()).device
    pixel_values = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, model.config.num_labels, (batch_size, size, size), device=device)
    with FlopCounterMode(display=False) as counter:
        model(pixel_values, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_forward_backward(
    model: DeepLabV2ForSemanticSegmentation,
    batch_size: int = 2,
    size: int = 321,
    steps: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    seed: int = 0,
    dtype: str = "fp32",
) -> dict:
    """
    Seconds per training step (forward with the loss, backward; no optimizer step) on random `size`x`size` inputs
    and labels, in training mode: the median, min, max and spread over `steps` timed steps after `warmup` untimed
    ones (`compare_interleaved`, synchronised on CUDA). `dtype` "bf16": the forward in bf16 autocast on `device`, as
    Trainer's `bf16` trains.
    """
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"`dtype` must be fp32 or bf16, got {dtype!r}.")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    generator = torch.Generator().manual_seed(seed)
    model = model.to(device).train()
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, model.config.num_labels, (batch_size, size, size), generator=generator).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(pixel_values, labels=labels).loss
        loss.backward()

    timing = compare_interleaved({"step": step}, device, repeats=steps, warmup=warmup)["step"]
    return {
        "batch_size": batch_size,
        "size": size,
        "steps": timing["repeats"],
        "seconds_median": timing["median_s"],
        "seconds_min": timing["min_s"],
        "seconds_max": timing["max_s"],
        "spread": timing["spread"],
        "device": str(device),
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }


__all__ = ["count_parameters", "time_forward_backward", "training_step_flops"]
