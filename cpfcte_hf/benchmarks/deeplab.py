# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Parameter count, FLOPs and forward+backward time of DeepLab-v2 ResNet-101 (random weights, no download), or of the
stage-2 model of a preset (DeepLab-v2 or another segmenter): `--config PRESET` builds the model that
`train-deeplab --config PRESET` trains from scratch (its `train_deeplab:` section, with any further `train-deeplab`
options given after it) and times it at the preset's crop size and batch.

cpfcte-hf bench deeplab --batch_size 2 --size 321 --steps 5 [--device cuda] [--output bench.json]
cpfcte-hf bench deeplab --config demo --steps 20                                  # the demo's stage 2
cpfcte-hf bench deeplab --config demo --steps 20 --resnet_hidden_sizes 32 64 128 256   # another width
cpfcte-hf bench deeplab --config demo --steps 20 --dtype fp32                     # against the preset's bf16: auto

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
    parser.add_argument("--batch_size", type=int, default=None, help="default: 2, or the preset's global batch")
    parser.add_argument("--size", type=int, default=None, help="default: 321, or the preset's crop size")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median, min, max and spread)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num_labels", type=int, default=21, help="classes (with --config: the dataset's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default=None,
        help="fp32, or the forward in bf16 autocast (default: fp32, or with --config the preset's bf16 as it resolves "
        "on this machine)",
    )
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    parser.add_argument(
        "--config",
        default=None,
        metavar="PRESET",
        help="time the stage-2 model of this preset; `train-deeplab` options after it change that model "
        "(e.g. --resnet_hidden_sizes 32 64 128 128)",
    )
    args, stage2_options = parse_plain_args(parser, argv, known_only=True)
    if stage2_options and not args.config:
        parser.error(f"unrecognized arguments: {' '.join(stage2_options)} (train-deeplab options need --config)")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.config:
        model, preset_batch, preset_size, preset_bf16 = preset_model(args.config, stage2_options, args.num_labels)
    else:
        config = DeepLabV2Config() if args.num_labels == 21 else DeepLabV2Config(num_labels=args.num_labels)
        model, preset_batch, preset_size, preset_bf16 = DeepLabV2ForSemanticSegmentation(config), 2, 321, False
    args.dtype = args.dtype or ("bf16" if preset_bf16 else "fp32")
    args.batch_size = args.batch_size or preset_batch
    args.size = args.size or preset_size
    result = {"parameters": count_parameters(model)}
    if args.config:
        result.update(config=args.config, options=stage2_options, architecture=architecture_of(model))
    result.update(
        time_forward_backward(
            model, args.batch_size, args.size, args.steps, args.warmup, args.device, dtype=args.dtype
        )
    )
    result["gflops_per_step"] = round(training_step_flops(model, args.batch_size, args.size) / 1e9, 1)
    result["achieved_gflops_per_second"] = round(result["gflops_per_step"] / result["seconds_median"], 1)
    if torch.device(args.device).type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    report_results(result, args.output)

    return 0


def preset_model(preset: str, options: list[str], num_labels: int):
    """The stage-2 model `train-deeplab --config preset *options` would train from scratch, with the classes of the
    preset's dataset (the shapes set's from its options; else `num_labels`), the preset's crop size and global
    batch, and whether it trains in bf16 (its `bf16`, `auto` resolved for this machine)."""
    from ..data.shapes import ShapesConfig
    from ..stage2.arguments import parse_arguments
    from ..stage2.train import build_model
    from ..utils.arguments import parse_key_values

    data_args, model_args, _, _, training_args = parse_arguments(
        ["--config", preset, *options, "--output_dir", "unused"], prog="cpfcte-hf bench deeplab"
    )
    if model_args.model_name_or_path or model_args.init_checkpoint:
        raise ValueError("bench deeplab --config times a model built from scratch, not --model_name_or_path.")
    if data_args.dataset == "shapes":
        fields = set(ShapesConfig.__dataclass_fields__)
        shapes_options = {k: v for k, v in parse_key_values(data_args.dataset_option).items() if k in fields}
        class_names = list(ShapesConfig(**shapes_options).class_names)
    else:
        class_names = [f"class_{index}" for index in range(num_labels)]
    model = build_model(model_args, class_names)
    return model, training_args.global_train_batch_size, training_args.crop_size, bool(training_args.bf16)


def architecture_of(model) -> dict:
    """The architecture's settings that decide a step's cost, for the JSON record."""
    config = model.config
    backbone = getattr(config, "backbone_config", None)
    record = {"model_type": config.model_type, "num_labels": config.num_labels}
    if backbone is not None:
        record.update(
            depths=list(backbone.depths),
            hidden_sizes=list(backbone.hidden_sizes),
            layer_type=backbone.layer_type,
            output_stride=config.output_stride,
        )
    return record
