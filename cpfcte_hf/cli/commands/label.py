# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""Pseudo-label masks for a dataset split with a trained CPF-CTE model (stage 1's product), and their report.

    cpfcte-hf label --model runs/voc/best --dataset voc --data_root data/VOCdevkit/VOC2012 \
        --split train_aug --output_dir pseudo/voc_train_aug
    accelerate launch --num_processes 2 -m cpfcte_hf label ...        # each process takes every 2nd image

Writes OUTPUT_DIR/bpm/<id>.png (argmax before the CRF) and OUTPUT_DIR/crf/<id>.png (CRF-refined), VOC palette PNGs
whose values are class ids; OUTPUT_DIR/summary.json; OUTPUT_DIR/report.html (every image with its masks, tags and
image-level scores, and the accounting, to open in a browser; thumbnails in OUTPUT_DIR/report_assets/); and, when the
split has ground-truth masks, OUTPUT_DIR/report/ (metrics.json, per_class_iou.csv, per_class_iou.png, per_image.json,
overlays/). OUTPUT_DIR/fingerprint.json records what determines
the masks: a rerun with the same settings skips the images already done; with other settings it is refused, naming
what changed (--overwrite recomputes). OUTPUT_DIR/sources.json records each image's content (file size and times, a
digest of its bytes) and tags: an image that changed since its masks were made is recomputed and counted as changed.
One run at a time: a run into an OUTPUT_DIR another run is using stops at once, naming it. A preset's `label:`
section gives defaults (`--config voc`); the command line wins. `--out` is an alias of `--output_dir`. CRF workers
and torch threads: the CPUs divided by the processes of the launch on this machine (--crf_workers, OMP_NUM_THREADS).

Your own photos: --dataset tagged --data_root FOLDER (a folder of images with tags.csv; tags are matched to the
model's class names). Exit status: 0 every image has its mask; 1 some images failed or were skipped (the others are
written; summary.json lists them with reasons); 2 bad arguments or input, or OUTPUT_DIR in use (nothing labelled,
nothing created); 130 / 143 stopped by SIGINT / SIGTERM (the masks written are complete; rerun the same command to
resume).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ...data import check_dataset
from ...data.arguments import DataSourceArguments
from ...models.cpfcte.crf import DEFAULT_CRF_MAX_SIDE
from ...stage2.arguments import DenseCRFArguments, crf_config_from
from ...utils.arguments import check_model_option, parse_args_with_presets, require
from ...utils.interrupts import interrupt_exit_code


@dataclass
class LabelArguments(DataSourceArguments):
    """What to pseudo-label, with which model, and where to."""

    model: str | None = field(default=None, metadata={"help": "Checkpoint directory or Hub id (required)."})
    split: str = field(default="train", metadata={"help": "The split to pseudo-label."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Output directory (required); alias --out.", "aliases": ["--out"]}
    )
    size: int | None = field(
        default=None, metadata={"help": "Inference resolution (default: the checkpoint's inference_size)."}
    )
    scales: list[float] = field(default_factory=lambda: [1.0], metadata={"help": "Multipliers of --size, averaged."})
    flip: bool = field(default=False, metadata={"help": "Also average the left-right flipped image."})
    use_image_labels: bool = field(
        default=True,
        metadata={
            "help": "Restrict masks to the image-level labels (--no_label_masking: off).",
            "aliases": ["--label_masking", "--label-masking"],
        },
    )
    crf: bool = field(default=True, metadata={"help": "Refine with the dense CRF (--no_crf: BPM only)."})
    crf_upsampling: str = field(
        default="align_corners",
        metadata={
            "help": "Geometry of the CRF's input: align_corners (ours: the BPM's map) or half_pixel (ViT-PCM: "
            "scikit-image's resize of the patch probabilities)."
        },
    )
    crf_workers: int | None = field(
        default=None, metadata={"help": "CRF processes per process (default: CPUs / processes; 0 = serial)."}
    )
    crf_max_side: int = field(
        default=DEFAULT_CRF_MAX_SIDE,
        metadata={
            "help": "Larger images are downscaled to this longest side for the probability maps and the CRF, and "
            "their masks upsampled back (bounds memory; 0 = never)."
        },
    )
    batch_size: int = 1
    overwrite: bool = field(
        default=False,
        metadata={"help": "Recompute everything (deletes the old masks); needed when OUTPUT_DIR has other settings."},
    )
    num_overlays: int = 4
    device: str | None = field(default=None, metadata={"help": "Default: the accelerate device, else cuda if any."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar (--no_progress: off)."})
    report_html: bool = field(
        default=True,
        metadata={
            "help": "Write OUTPUT_DIR/report.html: every image with its masks, tags and scores, worst first "
            "(--no_report_html: off, e.g. to save the thumbnails' time and space on a very large split)."
        },
    )

    def __post_init__(self):
        from ...prediction.config import check_crf_upsampling

        check_crf_upsampling(self.crf_upsampling)

    def pseudo_label_config(self, crf_args):
        from ...prediction.config import PseudoLabelConfig, config_from_options

        return config_from_options(PseudoLabelConfig, self, crf_config=crf_config_from(crf_args))


ARGUMENT_TYPES = (LabelArguments, DenseCRFArguments)


def check_inputs(args: LabelArguments, crf_args=None) -> None:
    """What `label` can check before transformers is imported, in the order it is reported: the required options,
    the data (root, split, tags: `check_dataset`) and the model's folder or Hub id."""
    require(args, "model", "dataset", "output_dir")
    check_dataset(args.dataset, args.data_root, args.split, **args.loader_options())
    check_model_option("model", args.model)


def parse_arguments(argv=None, early_check=None, light: bool = False):
    """`label`'s options; `early_check` (the command's own start: `check_inputs`) runs before transformers is
    imported. `run` parses its steps without it: an earlier step makes the model (`light`: the options built without
    transformers, see `parse_args_with_presets`)."""
    return parse_args_with_presets(
        ARGUMENT_TYPES,
        argv,
        description=__doc__,
        command="label",
        prog="cpfcte-hf label",
        early_check=early_check,
        light=light,
    )


def main(argv=None) -> int:
    try:
        args, crf_args = parse_arguments(argv, early_check=check_inputs)
    except (OSError, ValueError) as error:  # the data or the model's location, checked before transformers loads
        print(f"error: {error}", file=sys.stderr)
        return 2
    require(args, "model", "dataset", "output_dir")
    from ...prediction.pseudo_labels import run_pseudo_labeling

    try:
        options = args.loader_options()
        summary = run_pseudo_labeling(
            model=args.model,
            out_dir=args.output_dir,
            dataset_name=args.dataset,
            data_root=args.data_root,
            split=args.split,
            dataset_kwargs=options,
            config=args.pseudo_label_config(crf_args),
            device=args.device,
        )
    except (OSError, ValueError) as error:  # bad arguments: a clear message, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # SIGINT / SIGTERM: one line, exit status 130 / 143
        print(str(error) or "interrupted", file=sys.stderr)
        return interrupt_exit_code(error)
    return summary.exit_status  # 1 when images failed or were skipped (the others are written)
