# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Masks into the ecosystem: a labelled output folder as a `datasets` dataset, COCO JSON or Label Studio tasks
(`cpfcte-hf export`).

    cpfcte-hf export --labels runs/voc/pseudo_labels --format datasets coco --output_dir exports/voc_train

A labelled output folder is what `cpfcte-hf label` writes (stage 1) or a stage-2 `predictions/<split>/` folder. Its
split is loaded again from what the run recorded (`summary.json`: dataset, data root, split), and only the images
whose masks are complete and current by the run's own accounting are exported; the others are counted with their
reason (`records`). Formats:

- `datasets` (`to_datasets`): `DatasetDict.save_to_disk(OUT)` with `image`, `label` (both `datasets.Image`), `id`
  and `classes` columns, `OUT/id2label.json` and `OUT/README.md` (a dataset card); `--push_to_hub REPO` uploads the
  Hub folder (parquet shards in `data/`, card, `id2label.json`), `--dry_run DIR` writes it instead;
- `coco` (`to_coco`): `OUT/<split>.json`, one compressed-RLE annotation per class present per image, and the images
  in `OUT/images/<split>/`;
- `labelstudio` (`to_labelstudio`): `OUT/labelstudio/<split>.json`, Label Studio tasks with one brush pre-annotation
  per class present per image, `OUT/labelstudio/config.xml` (the labelling interface), the images in
  `OUT/images/<split>/`.

`OUT/export_summary.json` records what was exported and what was left out, and why.
"""

from .job import FORMATS, SUMMARY_FILE, ExportResult, export_labels, format_record, prepare_selections
from .records import (
    LEFT_OUT_REASONS,
    ExportError,
    ExportImage,
    LabelledOutput,
    Selection,
    read_labelled_output,
    scan_masks,
    select_images,
)


__all__ = [
    "FORMATS",
    "LEFT_OUT_REASONS",
    "SUMMARY_FILE",
    "ExportError",
    "ExportImage",
    "ExportResult",
    "LabelledOutput",
    "Selection",
    "export_labels",
    "format_record",
    "prepare_selections",
    "read_labelled_output",
    "scan_masks",
    "select_images",
]
