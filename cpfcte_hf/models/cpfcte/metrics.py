# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Semantic segmentation metrics: one confusion matrix per split, mIoU, per-class IoU, pixel accuracy
(docs/method.md section 5).

The mean IoU is taken over all C classes, background (class 0) included, from a single confusion matrix
accumulated over the whole split (not averaged per image). Ground-truth pixels equal to `ignore_index` (255) are
left out. A class with no ground-truth and no predicted pixel in the split has IoU NaN and does not enter the
mean; a class that is predicted but absent from the ground truth has IoU 0.

The formula is the one of `evaluate`'s `mean_iou` (intersection over union of pixel counts, `nanmean` over
classes); `evaluate.load("mean_iou")` needs the Hub, this does not, and a bincount is faster and exact.

Two ways to use it:

```python
>>> from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric, mean_iou
>>> metric = SegmentationMetric(num_labels=21)
>>> for prediction, reference in pairs:        # (H, W) integer arrays, any size per image
...     metric.update(prediction, reference)
>>> scores = metric.compute()                  # SegmentationScores: mean_iou, per_class_iou, pixel_accuracy, ...
>>> mean_iou(predictions, references, num_labels=21)["mean_iou"]   # functional form, e.g. in `compute_metrics`
```

This module imports only numpy: it is shared by stage 1 (pseudo-labels), the trainer and stage 2 (DeepLab).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


IGNORE_INDEX = 255


def confusion_matrix(
    predictions: np.ndarray,
    references: np.ndarray,
    num_labels: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """
    Confusion matrix of one prediction against its reference.

    Args:
        predictions: integer array of predicted class ids, any shape (e.g. `(H, W)` or `(B, H, W)`).
        references: integer array of ground-truth class ids, the same shape; `ignore_index` pixels are left out.
        num_labels: C, the number of classes, background included.
        ignore_index: ground-truth value to leave out (255); `None` keeps every pixel.

    Returns:
        `(C, C + 1)` int64 array: row = ground-truth class, column = predicted class. The extra last column counts
        predictions that are not a valid class id (e.g. 255 or a value >= C): they are wrong for every class, as
        in `evaluate`'s `mean_iou`.

    Raises:
        ValueError: shapes differ, or the reference holds a value that is neither a class id nor `ignore_index`.
    """
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"Prediction and reference shapes differ: {predictions.shape} vs {references.shape}. Resize the "
            "prediction to the ground-truth size (nearest neighbour) before scoring."
        )
    references = references.reshape(-1).astype(np.int64, copy=False)
    predictions = predictions.reshape(-1).astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = references != ignore_index
        references = references[keep]
        predictions = predictions[keep]
    if references.size and (references.min() < 0 or references.max() >= num_labels):
        bad = np.unique(references[(references < 0) | (references >= num_labels)])
        raise ValueError(
            f"Ground truth holds values {bad.tolist()[:10]} outside 0..{num_labels - 1} (and not the ignore index "
            f"{ignore_index}): wrong `num_labels` or a mask that is not a class-index PNG?"
        )
    predictions = np.where((predictions < 0) | (predictions >= num_labels), num_labels, predictions)
    counts = np.bincount(references * (num_labels + 1) + predictions, minlength=num_labels * (num_labels + 1))
    return counts.reshape(num_labels, num_labels + 1)


def iou_from_confusion_matrix(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU `(C,)` from a `(C, C)` or `(C, C + 1)` confusion matrix; NaN where a class has no union."""
    matrix = np.asarray(matrix, dtype=np.float64)
    num_labels = matrix.shape[0]
    intersection = np.diag(matrix[:, :num_labels])
    union = matrix.sum(axis=1) + matrix[:, :num_labels].sum(axis=0) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


@dataclass
class SegmentationScores:
    """
    Scores of one prediction set over a split.

    Attributes:
        mean_iou: mean of `per_class_iou` over the classes that are not NaN (NaN if none).
        per_class_iou: `(C,)` IoU per class, NaN for classes absent from both ground truth and prediction.
        pixel_accuracy: correct pixels / labelled (non-ignored) pixels (NaN if none).
        mean_accuracy: mean over classes present in the ground truth of the per-class recall.
        per_class_accuracy: `(C,)` recall per class, NaN for classes absent from the ground truth.
        confusion_matrix: `(C, C + 1)` counts (rows: ground truth, columns: prediction, last: invalid prediction).
        num_pixels: labelled pixels counted.
        num_images: images accumulated.
    """

    mean_iou: float
    per_class_iou: np.ndarray
    pixel_accuracy: float
    mean_accuracy: float
    per_class_accuracy: np.ndarray
    confusion_matrix: np.ndarray
    num_pixels: int
    num_images: int

    def to_dict(self, class_names: Sequence[str] | None = None, prefix: str = "") -> dict:
        """
        Flat, JSON-ready dict (NaN becomes `None`), e.g. for `Trainer.compute_metrics`:
        `{"mean_iou", "pixel_accuracy", "mean_accuracy", "num_pixels", "num_images", "iou_<class name>"...}`.
        """
        names = _class_names(class_names, len(self.per_class_iou))
        output = {
            f"{prefix}mean_iou": _json_float(self.mean_iou),
            f"{prefix}pixel_accuracy": _json_float(self.pixel_accuracy),
            f"{prefix}mean_accuracy": _json_float(self.mean_accuracy),
            f"{prefix}num_pixels": int(self.num_pixels),
            f"{prefix}num_images": int(self.num_images),
        }
        for name, value in zip(names, self.per_class_iou):
            output[f"{prefix}iou_{name}"] = _json_float(value)
        return output

    def per_class_table(self, class_names: Sequence[str] | None = None) -> list[dict]:
        """One row per class: `{"class_id", "class_name", "iou", "accuracy", "gt_pixels", "predicted_pixels"}`."""
        names = _class_names(class_names, len(self.per_class_iou))
        num_labels = len(names)
        gt_pixels = self.confusion_matrix.sum(axis=1)
        predicted_pixels = self.confusion_matrix[:, :num_labels].sum(axis=0)
        return [
            {
                "class_id": i,
                "class_name": names[i],
                "iou": _json_float(self.per_class_iou[i]),
                "accuracy": _json_float(self.per_class_accuracy[i]),
                "gt_pixels": int(gt_pixels[i]),
                "predicted_pixels": int(predicted_pixels[i]),
            }
            for i in range(num_labels)
        ]


def scores_from_confusion_matrix(matrix: np.ndarray, num_images: int = 0) -> SegmentationScores:
    """`SegmentationScores` of a `(C, C + 1)` (or `(C, C)`) confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.int64)
    num_labels = matrix.shape[0]
    per_class_iou = iou_from_confusion_matrix(matrix)
    gt_pixels = matrix.sum(axis=1)
    correct = np.diag(matrix[:, :num_labels])
    total = int(gt_pixels.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class_accuracy = np.where(gt_pixels > 0, correct / np.maximum(gt_pixels, 1), np.nan)
    return SegmentationScores(
        mean_iou=_nanmean(per_class_iou),
        per_class_iou=per_class_iou,
        pixel_accuracy=float(correct.sum() / total) if total else math.nan,
        mean_accuracy=_nanmean(per_class_accuracy),
        per_class_accuracy=per_class_accuracy,
        confusion_matrix=matrix,
        num_pixels=total,
        num_images=int(num_images),
    )


class SegmentationMetric:
    """
    Accumulates one confusion matrix over a split; `compute()` gives the split's scores.

    Args:
        num_labels: C, background included.
        ignore_index: ground-truth value left out (255).

    `update` takes one `(H, W)` mask pair, a `(B, H, W)` batch, or lists of masks of different sizes. Two
    accumulators add with `+` / `merge` (e.g. after gathering from several processes); `confusion_matrix` is a
    plain int64 array; `all_reduce` sums it over the processes of a distributed run.
    """

    def __init__(self, num_labels: int, ignore_index: int | None = IGNORE_INDEX):
        if num_labels < 1:
            raise ValueError(f"`num_labels` must be >= 1, got {num_labels}.")
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion_matrix = np.zeros((self.num_labels, self.num_labels + 1), dtype=np.int64)
        self.num_images = 0

    def update(self, predictions, references) -> SegmentationMetric:
        """Adds masks: arrays `(H, W)` or `(B, H, W)`, or equal-length sequences of `(H, W)` arrays."""
        if _is_sequence_of_arrays(predictions) or _is_sequence_of_arrays(references):
            if len(predictions) != len(references):
                raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references.")
            for prediction, reference in zip(predictions, references):
                self.update(prediction, reference)
            return self
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        self.confusion_matrix += confusion_matrix(predictions, references, self.num_labels, self.ignore_index)
        self.num_images += 1 if references.ndim <= 2 else int(np.prod(references.shape[:-2]))
        return self

    def add_confusion_matrix(self, matrix: np.ndarray, num_images: int = 1) -> SegmentationMetric:
        """Adds one image's `(C, C + 1)` matrix (`confusion_matrix`), e.g. when its own scores are wanted as well."""
        matrix = np.asarray(matrix, dtype=np.int64)
        if matrix.shape != self.confusion_matrix.shape:
            raise ValueError(f"Expected a {self.confusion_matrix.shape} matrix, got {matrix.shape}.")
        self.confusion_matrix += matrix
        self.num_images += int(num_images)
        return self

    def load(self, matrix: np.ndarray, num_images: int = 0) -> SegmentationMetric:
        """Replaces the state with a `(C, C + 1)` matrix (e.g. the all-reduced sum over processes)."""
        matrix = np.asarray(matrix, dtype=np.int64)
        if matrix.shape != self.confusion_matrix.shape:
            raise ValueError(f"Expected a {self.confusion_matrix.shape} matrix, got {matrix.shape}.")
        self.confusion_matrix = matrix.copy()
        self.num_images = int(num_images)
        return self

    def all_reduce(self, device=None) -> SegmentationMetric:
        """
        Sums the confusion matrix and the image count over all processes (one `torch.distributed.all_reduce`), so
        that each holds the split's totals; outside a distributed run (or with one process) nothing changes. `device`:
        where the sum runs (the process's GPU for NCCL; default: the current CUDA device with NCCL, else the CPU).
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        totals = torch.from_numpy(np.append(self.confusion_matrix.ravel(), self.num_images)).to(device)
        dist.all_reduce(totals)
        totals = totals.cpu().numpy()
        return self.load(totals[:-1].reshape(self.confusion_matrix.shape), int(totals[-1]))

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        if other.num_labels != self.num_labels:
            raise ValueError(f"Cannot merge metrics over {other.num_labels} and {self.num_labels} classes.")
        self.confusion_matrix += other.confusion_matrix
        self.num_images += other.num_images
        return self

    def __add__(self, other: SegmentationMetric) -> SegmentationMetric:
        result = SegmentationMetric(self.num_labels, self.ignore_index)
        return result.merge(self).merge(other)

    def compute(self) -> SegmentationScores:
        return scores_from_confusion_matrix(self.confusion_matrix, self.num_images)


def mean_iou(
    predictions,
    references,
    num_labels: int,
    ignore_index: int | None = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
) -> dict:
    """
    Functional form: scores of a whole split at once, as a flat dict (`SegmentationScores.to_dict`), plus
    `"per_class_iou"` as a list (None for NaN).

    `predictions` and `references` are `(N, H, W)` arrays or sequences of `(H, W)` arrays (sizes may differ
    between images). For `Trainer.compute_metrics`: `mean_iou(eval_pred.predictions, eval_pred.label_ids, C)`.
    """
    scores = SegmentationMetric(num_labels, ignore_index).update(predictions, references).compute()
    output = scores.to_dict(class_names)
    output["per_class_iou"] = [_json_float(v) for v in scores.per_class_iou]
    return output


def _is_sequence_of_arrays(value) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _json_float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _class_names(class_names: Iterable[str] | None, num_labels: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_labels)]
    names = [str(name) for name in class_names]
    if len(names) != num_labels:
        raise ValueError(f"Got {len(names)} class names for {num_labels} classes.")
    return names


__all__ = [
    "IGNORE_INDEX",
    "SegmentationMetric",
    "SegmentationScores",
    "confusion_matrix",
    "iou_from_confusion_matrix",
    "mean_iou",
    "scores_from_confusion_matrix",
]
