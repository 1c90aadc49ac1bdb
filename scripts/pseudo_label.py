#!/usr/bin/env python
r"""Pseudo-label masks for a dataset split with a trained CPF-CTE model (stage 1's product), and their report.

    python scripts/pseudo_label.py --model runs/voc/best --dataset voc --data-root data/VOCdevkit/VOC2012 \
        --split train_aug --out pseudo/voc_train_aug
    accelerate launch --num_processes 2 scripts/pseudo_label.py ...        # each process takes every 2nd image

Writes OUT/bpm/<id>.png (argmax before the CRF) and OUT/crf/<id>.png (CRF-refined), VOC palette PNGs whose values
are class ids; OUT/summary.json; and, when the split has ground-truth masks, OUT/report/ (metrics.json,
per_class_iou.csv, per_class_iou.png, overlays/). OUT/fingerprint.json records what determines the masks: a rerun
with the same settings skips the images already done; with other settings it is refused, naming what changed
(--overwrite recomputes). Options may also come from a YAML preset (`--config preset.yaml`, keys = option names
with underscores); the command line wins.

Your own photos: --dataset tagged --data-root FOLDER (a folder of images with tags.csv; tags are matched to the
model's class names). Exit status: 0 every image has its mask; 1 some images failed or were skipped (the others
are written; summary.json lists them with reasons); 2 bad arguments or input (nothing labelled); 130 / 143
stopped by SIGINT / SIGTERM (the masks written are complete; rerun the same command to resume).
"""

import argparse
import dataclasses
import sys

from cpfcte_hf.cli import load_preset, parse_key_values
from cpfcte_hf.crf import DenseCRFConfig
from cpfcte_hf.interrupts import interrupt_exit_code
from cpfcte_hf.pseudo_labeling import PseudoLabelConfig, run_pseudo_labeling


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML preset of defaults for the options below")
    parser.add_argument("--model", help="checkpoint directory or Hub id (required)")
    parser.add_argument(
        "--dataset",
        help="dataset kind for cpfcte_hf.data: voc, coco, shapes, hub, or tagged (your own photos: --data-root is "
        "the folder, with a tags.csv / tags.json / tags.jsonl; --dataset-option tags=FILE names another file)",
    )
    parser.add_argument("--data-root", "--data_root", dest="data_root", help="dataset root directory (or Hub id)")
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--dataset-option",
        "--dataset_option",
        dest="dataset_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra loader argument, e.g. num_val=20 for shapes (repeatable; YAML values)",
    )
    parser.add_argument("--out", help="output directory (required)")
    parser.add_argument(
        "--size", type=int, default=None, help="inference resolution (default: the checkpoint's inference_size)"
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multipliers of --size, averaged")
    parser.add_argument("--flip", action="store_true", help="also average the left-right flipped image")
    parser.add_argument(
        "--no-label-masking",
        "--no_label_masking",
        dest="use_image_labels",
        action="store_false",
        help="do not restrict masks to the image-level labels",
    )
    parser.add_argument("--no-crf", "--no_crf", dest="crf", action="store_false", help="write BPM only")
    parser.add_argument(
        "--crf-workers",
        "--crf_workers",
        dest="crf_workers",
        type=int,
        default=None,
        help="CRF processes per process (default: CPUs / processes; 0 = serial)",
    )
    parser.add_argument(
        "--crf-max-side",
        "--crf_max_side",
        dest="crf_max_side",
        type=int,
        default=PseudoLabelConfig.crf_max_side,
        help="larger images are downscaled to this longest side for the probability maps and the CRF, and their "
        "masks upsampled back (bounds memory; 0 = never; default %(default)s)",
    )
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute everything (deletes the old masks); needed when OUT was made with other settings",
    )
    parser.add_argument("--num-overlays", "--num_overlays", dest="num_overlays", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: the accelerate device, else cuda if available")
    parser.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false")
    crf = parser.add_argument_group("dense CRF (SPEC defaults)")
    for field in dataclasses.fields(DenseCRFConfig):
        flag = f"--crf-{field.name.replace('_', '-')}"
        if field.type in (bool, "bool"):
            crf.add_argument(flag, f"--crf_{field.name}", dest=f"crf_{field.name}", type=_bool, default=field.default)
        else:
            kind = int if field.type in (int, "int") else float
            crf.add_argument(flag, f"--crf_{field.name}", dest=f"crf_{field.name}", type=kind, default=field.default)
    return parser


def parse_with_preset(parser: argparse.ArgumentParser, argv, required=()) -> argparse.Namespace:
    """Parses `argv`; a `--config` YAML preset supplies defaults (unknown keys are an error naming them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            preset = load_preset(known.config)
        except (OSError, ValueError) as error:
            parser.error(str(error))
        destinations = {action.dest for action in parser._actions}
        unknown = sorted(set(preset) - destinations)
        if unknown:
            parser.error(f"unknown key(s) in {known.config}: {', '.join(unknown)}")
        parser.set_defaults(**preset)
    args = parser.parse_args(argv)
    missing = [name for name in required if getattr(args, name) in (None, "")]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(f"--{m.replace('_', '-')}" for m in missing))
    return args


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_with_preset(parser, argv, required=("model", "dataset", "out"))
    crf_config = DenseCRFConfig(**{f.name: getattr(args, f"crf_{f.name}") for f in dataclasses.fields(DenseCRFConfig)})
    config = PseudoLabelConfig(
        size=args.size,
        scales=tuple(args.scales),
        flip=args.flip,
        use_image_labels=args.use_image_labels,
        crf=args.crf,
        crf_config=crf_config,
        crf_workers=args.crf_workers,
        crf_max_side=args.crf_max_side,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        num_overlays=args.num_overlays,
        progress=args.progress,
    )
    try:
        summary = run_pseudo_labeling(
            model=args.model,
            out_dir=args.out,
            dataset_name=args.dataset,
            data_root=args.data_root,
            split=args.split,
            dataset_kwargs=parse_key_values(args.dataset_options),
            config=config,
            device=args.device,
        )
    except (OSError, ValueError) as error:  # bad arguments: a clear message, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # SIGINT / SIGTERM: one line, exit status 130 / 143
        print(str(error) or "interrupted", file=sys.stderr)
        return interrupt_exit_code(error)
    return summary.exit_status  # 1 when images failed or were skipped (the others are written)


if __name__ == "__main__":
    sys.exit(main())
