# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Data-loading throughput: images/s through decode + resize (+ ViT-PCM augmentation) + collator.

Without --root, writes --num-images VOC-sized (500x375) JPEGs in the VOC layout to a temporary folder and reads them
through `load_voc`, so the numbers include JPEG decoding. Each worker count is timed in --repeats windows of
--num-batches batches; the JSON gives the median and the spread.

    cpfcte-hf bench data                            # 384-px training batches of 16, 0 and 2 workers
    cpfcte-hf bench data --decode-only --workers 1  # what a loader feeding a GPU does (augmentation on it)
    cpfcte-hf bench data --dataset voc --root data/VOCdevkit --split train_aug
"""

import argparse
import os
import tempfile

import torch

from ..data import build_dataset
from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import machine_description, report_results
from .loaders import compare_loaders, write_voc_sized_set


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="voc", help="voc, coco, shapes, tagged or hub (with --root)")
    parser.add_argument(
        "--root", "--data_root", dest="root", help="dataset folder; default: generated VOC-sized JPEGs in VOC layout"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=384, help="training resolution")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--num-batches", type=int, default=4, help="batches per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per worker count")
    parser.add_argument("--num-images", type=int, default=128, help="images generated when --root is not given")
    parser.add_argument("--eval", action="store_true", help="time the eval transform instead")
    parser.add_argument(
        "--decode-only", action="store_true", help="workers only decode + resize (augmentation on the device)"
    )
    parser.add_argument("--output", help="also write the results (one JSON object) here")
    args = parse_plain_args(parser, argv)

    results = {"machine": machine_description(torch.device("cpu"))}
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root
        if root is None:
            generated = write_voc_sized_set(os.path.join(scratch, "voc"), args.num_images)
            root = generated["root"]
            results["source"] = f"{generated['images']} generated 500x375 JPEGs ({generated['mean_jpeg_kib']} KiB)"
        else:
            results["source"] = args.root
        dataset = build_dataset(args.dataset, root=root, split=args.split, cache_dir=os.path.join(scratch, "cache"))
        results["loaders"] = compare_loaders(
            dataset,
            args.workers,
            size=args.size,
            batch_size=args.batch_size,
            num_batches=args.num_batches,
            repeats=args.repeats,
            train=not args.eval,
            augment_in_loader=not args.decode_only,
        )
    report_results(results, args.output)
    return 0
