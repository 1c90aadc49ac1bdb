# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`cpfcte-hf make-voc-rehearsal`: a PASCAL VOC 2012 + SBD stand-in at full scale, from the procedural shapes.

    cpfcte-hf make-voc-rehearsal --output_dir data/voc_rehearsal                       # 10,582 + 1,449 images
    cpfcte-hf make-voc-rehearsal --output_dir data/voc_1k --train_images 1000 --val_images 137
    cpfcte-hf run --config voc --data_root data/voc_rehearsal ...                     # reads it as VOC

Writes `OUTPUT_DIR/VOCdevkit/VOC2012` in VOC's layout (JPEGs about 500x375, palette masks with 255 borders,
`train_aug`/`train`/`val` lists, `cls_labels_onehot.npy`); `cpfcte_hf.data.rehearsal` says what is like VOC and what
is assumed. A rerun completes an interrupted tree; other settings in the same folder are refused unless --overwrite.
Prints the summary (also in OUTPUT_DIR/rehearsal.json).
"""

import argparse
import json

from ...data.rehearsal import VOC_TRAIN_AUG_IMAGES, VOC_VAL_IMAGES, write_voc_rehearsal
from ...utils.arguments import BothSpellingsParser, fail, parse_plain_args
from ...utils.fingerprint import FingerprintMismatch


SUMMARY = "A VOC 2012 + SBD-sized tree (10,582 + 1,449 JPEGs) from the procedural shapes, for rehearsals."


def main(argv=None) -> int:
    parser = BothSpellingsParser(
        prog="cpfcte-hf make-voc-rehearsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="folder that will hold VOCdevkit/VOC2012")
    parser.add_argument("--train_images", type=int, default=VOC_TRAIN_AUG_IMAGES, help="images in train_aug")
    parser.add_argument("--val_images", type=int, default=VOC_VAL_IMAGES, help="images in val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=None, help="drawing processes (default: all CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="clear a tree made with other settings")
    parser.add_argument("--no_progress", action="store_true")
    args = parse_plain_args(parser, argv)
    if args.train_images < 1 or args.val_images < 1:
        fail(f"--train_images and --val_images must be at least 1, got {args.train_images} and {args.val_images}.")
    try:
        summary = write_voc_rehearsal(
            args.output_dir,
            train_images=args.train_images,
            val_images=args.val_images,
            seed=args.seed,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FingerprintMismatch, ValueError) as error:
        fail(str(error))
    print(json.dumps(summary, indent=2))
    return 0
