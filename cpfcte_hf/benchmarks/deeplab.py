# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Parameter count, FLOPs and forward+backward time of DeepLab-v2 ResNet-101 (random weights, no download).

cpfcte-hf bench deeplab --batch_size 2 --size 321 --steps 5 [--device cuda] [--output bench.json]

The step time is the median of --steps timed steps, with their min, max and spread (a GPU machine: see
`scripts/bench_gpu.py`, which times the whole training step in bf16 at batch 10).
"""

import argparse

import torch

from ..models.deeplab_v2.configuration_deeplab import DeepLabV2Config
from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation
from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import report_results
from .deeplab_model import count_parameters, time_forward_backward, training_step_flops


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median, min, max and spread)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num_labels", type=int, default=21)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    args = parse_plain_args(parser, argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = DeepLabV2Config() if args.num_labels == 21 else DeepLabV2Config(num_labels=args.num_labels)
    model = DeepLabV2ForSemanticSegmentation(config)
    result = {"parameters": count_parameters(model)}
    result.update(time_forward_backward(model, args.batch_size, args.size, args.steps, args.warmup, args.device))
    result["gflops_per_step"] = round(training_step_flops(model, args.batch_size, args.size) / 1e9, 1)
    result["achieved_gflops_per_second"] = round(result["gflops_per_step"] / result["seconds_median"], 1)
    if torch.device(args.device).type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    report_results(result, args.output)

    return 0
