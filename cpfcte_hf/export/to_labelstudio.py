# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The masks of a split as Label Studio tasks with brush pre-annotations (`labelstudio/<split>.json`), the labelling
interface that reads them (`labelstudio/config.xml`) and the images (`images/<split>/`, shared with the COCO export).

```
[{"data": {"image": "/data/local-files/?d=images/train/2007_000032.jpg", "cpfcte_id": "2007_000032"},
  "predictions": [{"model_version": "cpfcte_hf CRF pseudo-labels",
                   "result": [{"id": "c1", "type": "brushlabels", "from_name": "label", "to_name": "image",
                               "original_width": 500, "original_height": 281, "image_rotation": 0,
                               "value": {"format": "rle", "rle": [...], "brushlabels": ["aeroplane"]}}, ...]}]},
 ...]
```

One brush region per class present in an image's mask (background and the ignore value 255 are none), encoded by
`label_studio_converter.brush.mask2rle`, Label Studio's own encoder of a brush mask; its `decode_rle` reads a region
back into exactly that class's pixels. The masks are *predictions* (pre-annotations): a person accepts or corrects
them in Label Studio, whose export then holds the corrected masks.

Label Studio loads an image from the URL in `data.image`: by default `/data/local-files/?d=images/<split>/<file>`,
its local-files address of the copied image when Label Studio serves files from the export folder
(`LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`, `LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the export folder>`, and
a *Local files* storage on `<the export folder>/images/<split>` in the project). `image_url` replaces that address
with another (a bucket, a web server): a template with `{split}` and `{file_name}`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from ..models.cpfcte.visualization import read_mask, voc_palette
from .labelled import ExportError
from .records import Selection
from .to_coco import COCO_IMAGES_DIR, copy_image


LABELSTUDIO_DIR = "labelstudio"
LABELSTUDIO_CONFIG = "config.xml"
DEFAULT_IMAGE_URL = "/data/local-files/?d=" + COCO_IMAGES_DIR + "/{split}/{file_name}"
# The names of the labelling interface's tags, which every region names (`from_name`, `to_name`).
BRUSH_TAG, IMAGE_TAG = "label", "image"


def check_image_url(template: str) -> str:
    """`template` when it names `{file_name}` and no field but it and `{split}`; else an ExportError."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ExportError(f"--image_url {template!r}: {error}.") from None
    unknown = sorted(set(fields) - {"split", "file_name"})
    if unknown or "file_name" not in fields:
        raise ExportError(
            f"--image_url {template!r}: a template naming {{file_name}} (and {{split}} if you need it); "
            f"{'unknown field ' + ', '.join(unknown) if unknown else 'no {file_name}'}."
        )
    return template


def image_address(template: str, split: str, file_name: str) -> str:
    """The address of an image in its task: `template` with the split and file name URL-quoted (a space, `#` or `?`
    in a file name would otherwise end or break the address; `/` is kept)."""
    return template.format(split=quote(split), file_name=quote(file_name))


def labelstudio_config(class_names) -> str:
    """The labelling interface: the image and one brush label per class but background, in the package's palette."""
    palette = voc_palette()
    colours = ["#" + "".join(f"{int(v):02x}" for v in palette[i]) for i in range(len(class_names))]
    labels = "\n".join(
        f"    <Label value={quoteattr(str(name))} background={quoteattr(colours[i])}/>"
        for i, name in enumerate(class_names)
        if i != 0
    )
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_TAG}" value="${IMAGE_TAG}" zoom="true"/>\n'
        f'  <BrushLabels name="{BRUSH_TAG}" toName="{IMAGE_TAG}">\n{labels}\n  </BrushLabels>\n'
        "</View>\n"
    )


def brush_regions(mask: np.ndarray, classes, class_names) -> list[dict]:
    """One brush region per class of `classes` (background excluded) present in `mask`."""
    from label_studio_converter.brush import mask2rle

    height, width = mask.shape
    regions = []
    for class_id in classes:
        if class_id == 0:
            continue
        binary = (mask == class_id).astype(np.uint8) * 255
        if not binary.any():
            continue
        regions.append(
            {
                "id": f"c{int(class_id)}",
                "type": "brushlabels",
                "from_name": BRUSH_TAG,
                "to_name": IMAGE_TAG,
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {"format": "rle", "rle": mask2rle(binary), "brushlabels": [str(class_names[class_id])]},
            }
        )
    return regions


def model_version(selection: Selection) -> str:
    labelled = selection.labelled
    kind = "pseudo-labels" if labelled.stage == "pseudo_labels" else "stage-2 predictions"
    return f"cpfcte_hf {labelled.mask_set} {kind}"


def write_labelstudio_split(
    selection: Selection, out_dir: Path, progress=None, image_url: str = DEFAULT_IMAGE_URL
) -> Path:
    """Writes `out_dir/labelstudio/<split>.json` and `config.xml`, and copies the images to `out_dir/images/<split>/`.
    Returns the tasks file's path."""
    labelled = selection.labelled
    image_dir = out_dir / COCO_IMAGES_DIR / labelled.split
    version = model_version(selection)
    tasks = []
    for item in selection.images:
        file_name = copy_image(item, image_dir)
        mask = read_mask(item.mask_path)
        regions = brush_regions(mask, item.classes, labelled.class_names)
        tasks.append(
            {
                "data": {IMAGE_TAG: image_address(image_url, labelled.split, file_name), "cpfcte_id": item.id},
                "predictions": [{"model_version": version, "result": regions}],
            }
        )
        if progress is not None:
            progress.update(1)
    folder = out_dir / LABELSTUDIO_DIR
    folder.mkdir(exist_ok=True)
    (folder / LABELSTUDIO_CONFIG).write_text(labelstudio_config(labelled.class_names), encoding="utf-8")
    path = folder / f"{labelled.split}.json"
    path.write_text(json.dumps(tasks, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


__all__ = [
    "DEFAULT_IMAGE_URL",
    "LABELSTUDIO_CONFIG",
    "LABELSTUDIO_DIR",
    "brush_regions",
    "check_image_url",
    "image_address",
    "labelstudio_config",
    "write_labelstudio_split",
]
