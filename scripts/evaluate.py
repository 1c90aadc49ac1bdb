#!/usr/bin/env python
r"""mIoU report for any directories of mask PNGs (`<dir>/<id>.png`, class ids) against a split's ground truth.

    python scripts/evaluate.py --pred pseudo/voc_train/bpm pseudo/voc_train/crf \
        --dataset voc --data-root data/VOCdevkit/VOC2012 --split train --out pseudo/voc_train/report

One confusion matrix per directory over the whole split (all classes including background, 255 ignored). Writes
metrics.json, per_class_iou.csv, per_class_iou.png and overlays/ to --out (default: <first --pred>/report) and
prints the per-class table. Images without a prediction file are counted as missing, not scored. A --pred
directory that does not exist or holds no mask is an error (exit status 2) and nothing is created.
"""

import argparse
import sys

from cpfcte_hf.cli import parse_key_values
from cpfcte_hf.pseudo_labeling import run_evaluation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", nargs="+", required=True, help="one or more directories of <id>.png masks")
    parser.add_argument("--dataset", required=True, help="dataset kind for cpfcte_hf.data (voc, coco, shapes, ...)")
    parser.add_argument("--data-root", "--data_root", dest="data_root", help="dataset root directory (or Hub id)")
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--dataset-option",
        "--dataset_option",
        dest="dataset_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra loader argument, e.g. num_val=20 for shapes (repeatable; YAML values)",
    )
    parser.add_argument("--out", help="report directory (default: <first --pred>/report)")
    parser.add_argument("--num-overlays", "--num_overlays", dest="num_overlays", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        run_evaluation(
            args.pred,
            dataset_name=args.dataset,
            data_root=args.data_root,
            split=args.split,
            dataset_kwargs=parse_key_values(args.dataset_options),
            report_dir=args.out,
            num_overlays=args.num_overlays,
        )
    except (OSError, ValueError) as error:  # bad arguments: a clear message, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
