# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""mIoU report for any directories of mask PNGs (`<dir>/<id>.png`, class ids) against a split's ground truth.

    cpfcte-hf evaluate --pred pseudo/voc_train/bpm pseudo/voc_train/crf \
        --dataset voc --data_root data/VOCdevkit/VOC2012 --split train --output_dir pseudo/voc_train/report

One confusion matrix per directory over the whole split (all classes including background, 255 ignored). Writes
metrics.json, per_class_iou.csv, per_class_iou.png, per_image.json, overlays/ and report.html (every image with its
masks and its own mIoU, worst first; thumbnails in report_assets/) to --output_dir (alias --out; default:
<first --pred>/report) and prints the per-class table. Images without a prediction file are counted as missing. A
--pred directory that does not exist or holds no mask, data that cannot be loaded, or a report directory another run
is using is an error (exit status 2) and nothing is created.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ...data import check_dataset
from ...data.arguments import DataSourceArguments
from ...evaluation.results import check_prediction_dirs
from ...utils.arguments import RepeatableList, parse_args_with_presets, require


@dataclass
class EvaluateArguments(DataSourceArguments):
    pred: list[str] = field(
        default_factory=list,
        metadata={"help": "One or more directories of <id>.png masks (repeatable).", "action": RepeatableList},
    )
    split: str = "val"
    output_dir: str | None = field(
        default=None, metadata={"help": "Report directory (default: <first --pred>/report).", "aliases": ["--out"]}
    )
    num_overlays: int = 4
    report_html: bool = field(
        default=True,
        metadata={
            "help": "Write report.html (every image, worst first) in the report directory (--no_report_html: off)."
        },
    )


def check_inputs(args: EvaluateArguments) -> None:
    """What `evaluate` can check before transformers is imported: the required options, the prediction folders and
    the data."""
    require(args, "pred", "dataset")
    check_prediction_dirs(args.pred)
    check_dataset(args.dataset, args.data_root, args.split, **args.loader_options())


def parse_arguments(argv=None, early_check=None):
    return parse_args_with_presets(
        (EvaluateArguments,),
        argv,
        description=__doc__,
        command="evaluate",
        prog="cpfcte-hf evaluate",
        early_check=early_check,
    )


def main(argv=None) -> int:
    try:
        (args,) = parse_arguments(argv, early_check=check_inputs)
    except (OSError, ValueError) as error:  # the data, checked before transformers loads
        print(f"error: {error}", file=sys.stderr)
        return 2
    require(args, "pred", "dataset")
    from ...evaluation.report import run_evaluation

    try:
        options = args.loader_options()
        run_evaluation(
            args.pred,
            dataset_name=args.dataset,
            data_root=args.data_root,
            split=args.split,
            dataset_kwargs=options,
            report_dir=args.output_dir,
            num_overlays=args.num_overlays,
            report_html=args.report_html,
        )
    except (OSError, ValueError) as error:  # bad arguments: a clear message, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
