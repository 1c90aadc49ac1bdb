# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training-step cost of CPF-CTE against its bare encoder (same input, same batch), for each encoder family.

    cpfcte-hf bench train --batch-size 2                                   # CPU, ViT-B/16 at 384x384
    cpfcte-hf bench train --backbone vit deit dinov2 dinov2-reg clip siglip --size s --repeats 5
    cpfcte-hf bench train --device cuda --batch-size 16 --dtype bf16 --attn sdpa

Every family runs on the same patch grid (`--image-size` / 16 patches a side; DINOv2's 14-pixel patches get
proportionally smaller images). Full model and bare encoder are timed in turn (full, encoder, full, encoder, ...)
and the median of `--repeats` rounds is reported, so that load drifts on a shared machine hit both alike.
Prints one JSON object: parameter counts, forward+backward and full Adam step times, and the full/encoder ratio
(the head overhead) per family. Weights are random: timing does not depend on them.
"""

import argparse

import torch

from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig
from ..models.cpfcte.modeling_cpfcte import ENCODER_FAMILIES, CPFCTEForWeaklySupervisedSegmentation, build_encoder
from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import (
    BENCHMARK_BACKBONES,
    benchmark_backbone_config,
    machine_description,
    optimizer_step,
    report_results,
    time_interleaved,
)


def bench_family(name: str, args, device: torch.device, autocast_dtype) -> dict:
    grid = args.image_size // 16
    torch.manual_seed(0)
    backbone_config = benchmark_backbone_config(name, args.size, grid)
    config = CPFCTEConfig(
        backbone_config=backbone_config,
        num_labels=args.num_labels,
        lstm_hidden_size=backbone_config.hidden_size // 4,
    )
    full = CPFCTEForWeaklySupervisedSegmentation(config).to(device).train()
    full.set_attn_implementation(args.attn)
    backbone = build_encoder(config.backbone_config).to(device).train()
    backbone.set_attn_implementation(args.attn)
    interpolate = ENCODER_FAMILIES[backbone_config.model_type].interpolates_by_argument
    backbone_kwargs = {"interpolate_pos_encoding": True} if interpolate else {}

    image_size = grid * config.patch_size
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, device=device)
    labels = torch.zeros(args.batch_size, args.num_labels, device=device)
    labels[:, :2] = 1

    losses = {
        "full": (full, lambda: full(pixel_values, labels=labels).loss),
        "backbone": (
            backbone,
            lambda: backbone(pixel_values, **backbone_kwargs).last_hidden_state.float().pow(2).mean(),
        ),
    }
    forward_backward, train_step = {}, {}
    for key, (model, loss_fn) in losses.items():
        forward_backward[key] = _forward_backward(model, loss_fn, device, autocast_dtype)
        train_step[key] = optimizer_step(
            loss_fn, torch.optim.Adam(model.parameters(), lr=1e-4), lambda: _autocast(device, autocast_dtype)
        )
    fb_times = time_interleaved(forward_backward, device, args.repeats, args.warmup)
    step_times = time_interleaved(train_step, device, args.repeats, args.warmup)
    return _family_record(args, full, backbone_config, image_size, grid, fb_times, step_times)


def _autocast(device: torch.device, autocast_dtype):
    return torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)


def _forward_backward(model, loss_fn, device: torch.device, autocast_dtype):
    """Forward and backward without an optimizer step, as a callable to time."""

    def fb():
        with _autocast(device, autocast_dtype):
            loss = loss_fn()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return fb


def _family_record(args, full, backbone_config, image_size: int, grid: int, fb_times: dict, step_times: dict) -> dict:
    return {
        "model_type": backbone_config.model_type,
        "image_size": image_size,
        "patch_grid": grid,
        "prefix_tokens": full.num_prefix_tokens,
        "parameters": {
            "full": full.num_parameters(),
            "backbone": full.vit.num_parameters(),
            "heads": full.num_parameters() - full.vit.num_parameters(),
        },
        "forward_backward_s": {key: value["median_s"] for key, value in fb_times.items()},
        "train_step_s": {key: value["median_s"] for key, value in step_times.items()},
        "train_images_per_s": args.batch_size / step_times["full"]["median_s"],
        "ratio_full_over_backbone": {
            "forward_backward": fb_times["full"]["median_s"] / fb_times["backbone"]["median_s"],
            "train_step": step_times["full"]["median_s"] / step_times["backbone"]["median_s"],
        },
        "times_s": {"forward_backward": fb_times, "train_step": step_times},
    }


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbone", nargs="+", choices=sorted(BENCHMARK_BACKBONES), default=["vit"], help="encoder families"
    )
    parser.add_argument("--size", choices=["s", "b"], default="b", help="ViT-S (384 wide) or ViT-B (768) encoders")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=384, help="for 16-pixel patches; sets the patch grid")
    parser.add_argument("--num-labels", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa or eager")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)
    if args.image_size % 16:
        parser.error(f"--image-size must be a multiple of 16, got {args.image_size}.")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1.")

    device = torch.device(args.device)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    results = {
        "machine": machine_description(device),
        "batch_size": args.batch_size,
        "size": {"s": "ViT-S (384 wide, 6 heads, 12 blocks)", "b": "ViT-B (768 wide, 12 heads, 12 blocks)"}[args.size],
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "repeats": args.repeats,
        "backbones": {},
    }
    for name in args.backbone:
        results["backbones"][name] = bench_family(name, args, device, autocast_dtype)
        print(
            f"{name}: forward+backward full/backbone = "
            f"{results['backbones'][name]['ratio_full_over_backbone']['forward_backward']:.3f}",
            flush=True,
        )
    report_results(results, args.output)
    return 0
