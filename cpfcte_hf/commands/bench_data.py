# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Data-loading throughput: images/s through decode + TrainTransform (ViT-PCM augmentation) + collator.

Without --root, writes a VOC-layout shapes set of --num-images JPEGs of --source-size px (close to VOC's
500x375) to a temporary folder and reads it through `load_voc`, so the numbers include JPEG decoding.

    cpfcte-hf bench data                          # 384-px training batches of 16, 2 workers
    cpfcte-hf bench data --dataset voc --root data/VOCdevkit --split train_aug
"""

import argparse
import datetime
import json
import os
import platform
import tempfile

from cpfcte_hf.cli import parse_plain_args
from cpfcte_hf.data import build_dataset, write_shapes_voc
from cpfcte_hf.data.benchmark import loader_throughput


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="voc", help="voc, coco, shapes, tagged or hub (with --root)")
    parser.add_argument(
        "--root", "--data_root", dest="root", help="dataset folder; default: a generated shapes set in VOC layout"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=384, help="training resolution")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--num-batches", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=128, help="images generated when --root is not given")
    parser.add_argument("--source-size", type=int, default=448, help="side of the generated images")
    parser.add_argument("--eval", action="store_true", help="time the eval transform instead")
    parser.add_argument("--output", help="also write the results (one JSON list, one entry per --workers) here")
    args = parse_plain_args(parser, argv)

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root
        if root is None:
            root = os.path.join(scratch, "shapes")
            write_shapes_voc(root, num_train=args.num_images, num_val=1, image_size=args.source_size)
        dataset = build_dataset(args.dataset, root=root, split=args.split, cache_dir=os.path.join(scratch, "cache"))
        for workers in args.workers:
            result = loader_throughput(
                dataset,
                size=args.size,
                batch_size=args.batch_size,
                num_workers=workers,
                num_batches=args.num_batches,
                train=not args.eval,
            )
            result.update(
                source=args.root or f"generated shapes, {args.source_size}x{args.source_size} JPEG",
                cpus=os.cpu_count(),
                machine=platform.processor() or platform.machine(),
                date=datetime.date.today().isoformat(),
            )
            print(json.dumps(result))
            results.append(result)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(json.dumps(results, indent=2) + "\n")
    return 0
