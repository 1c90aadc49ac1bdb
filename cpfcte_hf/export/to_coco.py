# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The masks of a split as one COCO JSON (`<split>.json`), with the images it names in `images/<split>/`.

```
{"info": {...}, "licenses": [],
 "categories": [{"id": 1, "name": "aeroplane", "supercategory": "object"}, ...],      class ids as in the masks
 "images": [{"id": 1, "file_name": "2007_000032.jpg", "width": 500, "height": 281, "cpfcte_id": "2007_000032"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [281, 500], "counts": "..."},
                  "area": 34104, "bbox": [x, y, w, h], "iscrowd": 0}]}
```

One annotation per class present in an image's mask: the class's pixels as a compressed RLE (`pycocotools.mask.encode`),
its area and bounding box from pycocotools too. Category ids are the masks' class ids; background (id 0) and the
ignore value 255 are no categories and have no annotations: in a mask rebuilt from the JSON, pixels under no
annotation are background, and ignore pixels read back as background. `file_name` is relative to `images/<split>/`,
where each image is copied as it was stored (not re-encoded). `pycocotools.coco.COCO(path).annToMask(ann)` reads an
annotation back into exactly the mask's pixels of that class.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..models.cpfcte.visualization import read_mask
from .records import Selection


COCO_IMAGES_DIR = "images"


def coco_categories(class_names) -> list[dict]:
    """The categories: every class but background (id 0), with its id in the masks."""
    return [{"id": i, "name": str(name), "supercategory": "object"} for i, name in enumerate(class_names) if i != 0]


def mask_annotations(mask: np.ndarray, classes, image_id: int, first_id: int) -> list[dict]:
    """One annotation per class of `classes` (background excluded) present in `mask`: RLE, area, bbox, iscrowd 0."""
    annotations = []
    for class_id in classes:
        if class_id == 0:
            continue
        rle = mask_utils.encode(np.asfortranarray(mask == class_id, dtype=np.uint8))
        area = int(mask_utils.area(rle))
        if area == 0:
            continue
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image_id,
                "category_id": int(class_id),
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": area,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return annotations


def copy_image(item, image_dir: Path) -> str:
    """Copies the image of `item` as it was stored (not re-encoded) to `image_dir/<id><extension>` (once, when several
    formats share the folder); returns that file name."""
    file_name = f"{item.id}{item.extension}"
    target = image_dir / file_name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.image_bytes())
    return file_name


def coco_description(selection: Selection) -> str:
    labelled = selection.labelled
    return (
        f"{labelled.mask_set} masks of {labelled.dataset or 'a dataset'} {labelled.split} "
        f"({'stage-1 pseudo-labels' if labelled.stage == 'pseudo_labels' else 'stage-2 predictions'}, cpfcte_hf)"
    )


def write_coco_split(selection: Selection, out_dir: Path, progress=None) -> Path:
    """Writes `out_dir/<split>.json` and copies the images to `out_dir/images/<split>/`. Returns the JSON's path."""
    from .. import __version__

    labelled = selection.labelled
    image_dir = out_dir / COCO_IMAGES_DIR / labelled.split
    images, annotations = [], []
    for number, item in enumerate(selection.images, start=1):
        file_name = copy_image(item, image_dir)
        images.append(
            {"id": number, "file_name": file_name, "width": item.width, "height": item.height, "cpfcte_id": item.id}
        )
        mask = read_mask(item.mask_path)
        annotations += mask_annotations(mask, item.classes, number, len(annotations) + 1)
        if progress is not None:
            progress.update(1)
    record = {
        "info": {
            "description": coco_description(selection),
            "version": __version__,
            "date_created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "licenses": [],
        "categories": coco_categories(labelled.class_names),
        "images": images,
        "annotations": annotations,
    }
    path = out_dir / f"{labelled.split}.json"
    path.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


__all__ = ["COCO_IMAGES_DIR", "coco_categories", "copy_image", "mask_annotations", "write_coco_split"]
