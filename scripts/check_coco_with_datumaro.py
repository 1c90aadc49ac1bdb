# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""
Reads a `cpfcte-hf export --format coco` split with Datumaro, the reader behind CVAT's "COCO 1.0" import, and
compares the masks it rebuilds with the exported masks pixel for pixel (ignore pixels, 255, are in no annotation
and come back as background).

    python -m venv /tmp/dm_env && /tmp/dm_env/bin/pip install datumaro numpy pillow   # Datumaro, kept apart
    cpfcte-hf export --labels outputs/demo/stage2 --format coco --output_dir /tmp/coco_val
    /tmp/dm_env/bin/python scripts/check_coco_with_datumaro.py --export /tmp/coco_val --split val \
        --masks outputs/demo/stage2/predictions/val/ms_crf

Datumaro wants COCO's own layout (`annotations/instances_<split>.json` beside `images/<split>/`), so the script links
the export into that layout in a temporary folder first; that layout, zipped, is also what to give CVAT. Exit status
0 when every mask came back equal, 1 otherwise. Runs in Datumaro's own environment (no cpfcte_hf import).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="A `cpfcte-hf export --format coco` folder.")
    parser.add_argument("--split", required=True, help="The split of its <split>.json.")
    parser.add_argument("--masks", required=True, help="The folder of the exported masks (<id>.png).")
    args = parser.parse_args(argv)
    import datumaro as dm

    export_dir = Path(args.export).resolve()
    record = json.loads((export_dir / f"{args.split}.json").read_text())
    file_to_id = {image["file_name"]: image["cpfcte_id"] for image in record["images"]}
    category_ids = {c["name"]: c["id"] for c in record["categories"]}
    work = Path(tempfile.mkdtemp(prefix="check_datumaro-"))
    try:
        (work / "annotations").mkdir()
        (work / "images").mkdir()
        shutil.copy(export_dir / f"{args.split}.json", work / "annotations" / f"instances_{args.split}.json")
        (work / "images" / args.split).symlink_to(export_dir / "images" / args.split)
        dataset = dm.Dataset.import_from(str(work), "coco_instances")
        labels = dataset.categories()[dm.AnnotationType.label]
        kinds, differing = set(), []
        for item in dataset:
            file_name = Path(item.media.path).name
            mask = np.asarray(Image.open(Path(args.masks) / f"{file_to_id[file_name]}.png"))
            expected = np.where(mask == 255, 0, mask)
            rebuilt = np.zeros_like(expected)
            for annotation in item.annotations:
                kinds.add(type(annotation).__name__)
                if isinstance(annotation, dm.Mask):  # each RLE; Datumaro adds the boxes as Bbox annotations
                    pixels = annotation.image.astype(bool)
                    if rebuilt[pixels].any():
                        differing.append(file_name)
                    rebuilt[pixels] = category_ids[labels.items[annotation.label].name]
            if not np.array_equal(rebuilt, expected):
                differing.append(file_name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Datumaro {dm.__version__}: {len(dataset)} images, annotation kinds {sorted(kinds)}")
    print(f"masks rebuilt by Datumaro equal to the exported masks: {len(dataset) - len(set(differing))} of "
          f"{len(record['images'])}")  # fmt: skip
    return 0 if not differing and len(dataset) == len(record["images"]) else 1


if __name__ == "__main__":
    sys.exit(main())
