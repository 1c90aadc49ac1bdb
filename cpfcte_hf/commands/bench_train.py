# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training-step cost of CPF-CTE against the bare ViTModel backbone (same input, same batch).

    cpfcte-hf bench train --batch-size 2                       # CPU, ViT-B/16 at 384x384
    cpfcte-hf bench train --device cuda --batch-size 16 --dtype bf16 --attn sdpa

Prints one JSON object: parameter counts, forward+backward and full Adam step times (median), images/s, and
the full/backbone ratio. Weights are random: timing does not depend on them.
"""

import argparse
import json

import torch
from transformers import ViTModel

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, vit_b16_384_config
from cpfcte_hf.benchmarking import machine_description, parameter_count, time_call
from cpfcte_hf.cli import parse_plain_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--num-labels", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa or eager")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)

    device = torch.device(args.device)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    config = CPFCTEConfig(backbone_config=vit_b16_384_config(), num_labels=args.num_labels)
    config._attn_implementation = args.attn
    full = CPFCTEForWeaklySupervisedSegmentation(config).to(device).train()
    backbone = ViTModel(config.backbone_config, add_pooling_layer=False).to(device).train()

    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.zeros(args.batch_size, args.num_labels, device=device)
    labels[:, 0] = 1
    labels[:, 1] = 1

    def full_loss():
        return full(pixel_values, labels=labels).loss

    def backbone_loss():
        return backbone(pixel_values, interpolate_pos_encoding=True).last_hidden_state.float().pow(2).mean()

    results = {
        "machine": machine_description(device),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "parameters": {
            "full": parameter_count(full),
            "vit_backbone": parameter_count(full.vit),
            "class_token_fusion": parameter_count(full.class_token_fusion),
            "context_fusion_bilstm": parameter_count(full.context_fusion),
            "patch_classifier": parameter_count(full.patch_classifier),
        },
    }
    for name, model, loss_fn in (("full", full, full_loss), ("backbone", backbone, backbone_loss)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def forward_backward(model=model, loss_fn=loss_fn):
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = loss_fn()
            loss.backward()
            model.zero_grad(set_to_none=True)

        def train_step(loss_fn=loss_fn, optimizer=optimizer):
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fb = time_call(forward_backward, device, args.steps, args.warmup)
        step = time_call(train_step, device, args.steps, args.warmup)
        results[name] = {
            "forward_backward_s": fb["median_s"],
            "train_step_s": step["median_s"],
            "train_images_per_s": args.batch_size / step["median_s"],
        }
        if device.type == "cuda":
            results[name]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    results["ratio_full_over_backbone"] = {
        "forward_backward": results["full"]["forward_backward_s"] / results["backbone"]["forward_backward_s"],
        "train_step": results["full"]["train_step_s"] / results["backbone"]["train_step_s"],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    return 0
