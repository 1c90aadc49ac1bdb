# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Per-image records a run keeps beside its masks, for its report (`cpfcte_hf.evaluation.html_report`) and its review.

Two files:

- `image_scores.jsonl`, written by stage 1's prediction job as it goes: one line per image,
  `{"id": "2007_000032", "scores": [0.998, 0.012, ...]}`, the model's image-level class scores (the Top-K pooled patch
  probabilities, `outputs.image_scores`, averaged over the views), in the model's class order. Lines are appended
  (one `write` each, so that the processes of one run can share the file); the last line of an id wins, a line cut
  short by a killed run is ignored, and a resumed run keeps the lines of the images it does not redo.
- `per_image.json`, written with an evaluation's `metrics.json` (`evaluation.report.evaluate_predictions`): each
  image's mIoU per prediction set, from its own confusion matrix (`metrics.confusion_matrix`, the split's formula on
  one image), the classes of its ground truth, and why a prediction could not be scored.

```
{"schema": "cpfcte_hf.per_image", "schema_version": 1, "class_names": [...], "sets": ["BPM", "CRF"],
 "images": {"2007_000032": {"gt_classes": [0, 1, 15], "mean_iou": {"BPM": 0.61, "CRF": 0.70}, "errors": {}}}}
```

This module imports numpy only (and `metrics`, `visualization` for the atomic write).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..models.cpfcte.metrics import scores_from_confusion_matrix
from ..utils.io import atomic_write_text


IMAGE_SCORES_FILE = "image_scores.jsonl"
PER_IMAGE_FILE = "per_image.json"
PER_IMAGE_SCHEMA = "cpfcte_hf.per_image"


class ImageScoreLog:
    """
    Appends image-level scores to `<directory>/image_scores.jsonl` (see the module docstring).

    `append(ids, scores)` takes the ids of a batch and its `(B, C)` scores (tensor or array); each line is one
    `os.write` on a file opened with `O_APPEND`, so lines of several processes never interleave.
    """

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / IMAGE_SCORES_FILE

    def append(self, ids: Sequence[str], scores) -> None:
        values = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(ids):
            raise ValueError(f"Expected ({len(ids)}, C) image scores, got shape {values.shape}.")
        lines = "".join(
            json.dumps({"id": str(image_id), "scores": [round(float(v), 4) for v in row]}) + "\n"
            for image_id, row in zip(ids, values)
        )
        handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(handle, lines.encode("utf-8"))
        finally:
            os.close(handle)


def read_image_scores(directory: str | os.PathLike) -> dict[str, list[float]]:
    """`{id: scores}` from `<directory>/image_scores.jsonl` (the last line of an id wins; unreadable lines are
    skipped); `{}` when the run recorded none."""
    path = Path(directory) / IMAGE_SCORES_FILE
    scores: dict[str, list[float]] = {}
    if not path.is_file():
        return scores
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:  # one parse for the whole file (10,000 lines: 0.1 s instead of 1 s)
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:  # a line cut short by a killed run: line by line, without it
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    for record in records:
        try:
            scores[str(record["id"])] = [float(v) for v in record["scores"]]
        except (KeyError, TypeError, ValueError):
            continue
    return scores


def per_image_scores(matrix: np.ndarray) -> tuple[float | None, list[int]]:
    """One image's `(C, C + 1)` confusion matrix -> its mIoU (`None` when nothing was scored) and the classes of its
    ground truth."""
    mean_iou = scores_from_confusion_matrix(matrix).mean_iou
    gt_classes = np.flatnonzero(np.asarray(matrix).sum(axis=1)).tolist()
    return (None if math.isnan(mean_iou) else round(float(mean_iou), 6)), [int(c) for c in gt_classes]


def write_per_image(
    directory: str | os.PathLike,
    images: Mapping[str, dict],
    class_names: Sequence[str],
    sets: Sequence[str],
) -> Path:
    """Writes `<directory>/per_image.json` (atomically) from `{id: {"gt_classes", "mean_iou", "errors"}}`."""
    record = {
        "schema": PER_IMAGE_SCHEMA,
        "schema_version": 1,
        "class_names": [str(name) for name in class_names],
        "sets": [str(name) for name in sets],
        "images": dict(images),
    }
    path = Path(directory) / PER_IMAGE_FILE
    atomic_write_text(path, json.dumps(record, separators=(",", ":")) + "\n")
    return path


def read_per_image(directory: str | os.PathLike) -> dict | None:
    """The content of `<directory>/per_image.json`, or `None` when there is none (no ground truth, or a report
    written before the file existed). Raises `ValueError` naming the file when it is not of this schema."""
    path = Path(directory) / PER_IMAGE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or record.get("schema") != PER_IMAGE_SCHEMA:
        raise ValueError(f"{path} is not a per-image record ({PER_IMAGE_SCHEMA}).")
    return record


__all__ = [
    "IMAGE_SCORES_FILE",
    "PER_IMAGE_FILE",
    "ImageScoreLog",
    "per_image_scores",
    "read_image_scores",
    "read_per_image",
    "write_per_image",
]
