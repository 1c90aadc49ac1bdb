# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""WSSS mean IoU: the mIoU of weakly supervised semantic segmentation as an `evaluate` metric module.

The same numbers as `cpfcte_hf.models.cpfcte.metrics` (one confusion matrix over the whole split, every class background included,
reference pixels equal to `ignore_index` left out), behind the interface of `evaluate`'s `mean_iou`. This folder has
the layout of a metric Space (`wsss_mean_iou.py`, `README.md`, `requirements.txt`), so it can be pushed as one, and
loads offline by path:

    import evaluate
    metric = evaluate.load("path/to/wsss_mean_iou")
    for prediction, reference in pairs:                  # (H, W) integer masks, any size per image
        metric.add_batch(predictions=[prediction], references=[reference])
    metric.compute(num_labels=21, ignore_index=255)      # {"mean_iou", "mean_accuracy", "overall_accuracy", ...}
"""

import datasets
import evaluate
import numpy as np

from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric


_DESCRIPTION = """
Mean intersection over union of semantic segmentation masks, the metric of weakly supervised semantic segmentation
(WSSS) papers: one confusion matrix is accumulated over all images of a split (not averaged per image), the IoU of each
class is taken from it, and the mean runs over every class, background (class 0) included. Reference pixels equal to
`ignore_index` (255) are left out. A predicted value that is not a class id (e.g. 255, or >= num_labels) is wrong for
every class. A class with no reference and no predicted pixel has IoU NaN and does not enter the mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`): predicted class-id masks, each (height, width).
    references (`List[ndarray]`): reference class-id masks, the same sizes; `ignore_index` pixels are left out.
    num_labels (`int`): number of classes, background included.
    ignore_index (`int`, defaults to 255): reference value that is left out.
    nan_to_num (`int`, *optional*): replaces NaN in the results.
    label_map (`dict`, *optional*): old -> new class ids, applied to the references.
    reduce_labels (`bool`, defaults to `False`): references minus 1, background (0) becomes `ignore_index`.
Returns:
    mean_iou (`float`), mean_accuracy (`float`), overall_accuracy (`float`),
    per_category_iou (`ndarray` of shape (num_labels,)), per_category_accuracy (`ndarray` of shape (num_labels,)),
    confusion_matrix (`ndarray` of shape (num_labels, num_labels + 1): rows reference, columns prediction, the last
    column predictions that are no class id), num_pixels (`int`), num_images (`int`).
Examples:
    >>> metric = evaluate.load("wsss_mean_iou")
    >>> metric.compute(predictions=[np.array([[1, 2], [0, 255]])], references=[np.array([[1, 2], [0, 0]])],
    ...                num_labels=3, ignore_index=255)["mean_iou"]
    0.8333333333333334
"""

_CITATION = """
@misc{cpfcte_hf,
  title = {cpfcte_hf: CPF-CTE weakly supervised semantic segmentation for the Hugging Face ecosystem},
  year = {2026}
}
"""


def _as_pillow_array(mask):
    """Masks as int32 (Pillow's "I" mode) when they are wider integers, so that `datasets.Image` stores them as is."""
    array = np.asarray(mask)
    return array.astype(np.int32) if array.dtype.kind in "iu" and array.dtype.itemsize > 4 else mask


def _relabel(reference: np.ndarray, ignore_index: int, label_map, reduce_labels: bool) -> np.ndarray:
    reference = np.array(reference, dtype=np.int64)
    if label_map:
        original = reference.copy()
        for old, new in label_map.items():
            reference[original == old] = new
    if reduce_labels:
        reference[reference == 0] = ignore_index
        reference = reference - 1
        reference[reference == ignore_index - 1] = ignore_index
    return reference


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WsssMeanIou(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Adds masks (lists of (H, W) integer arrays) to the module's store."""
        predictions = None if predictions is None else [_as_pillow_array(mask) for mask in predictions]
        references = None if references is None else [_as_pillow_array(mask) for mask in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Adds one (H, W) mask pair to the module's store."""
        prediction = None if prediction is None else _as_pillow_array(prediction)
        reference = None if reference is None else _as_pillow_array(reference)
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        nan_to_num: int | None = None,
        label_map: dict | None = None,
        reduce_labels: bool = False,
    ):
        metric = SegmentationMetric(num_labels, ignore_index)
        for prediction, reference in zip(predictions, references):
            metric.update(np.asarray(prediction), _relabel(reference, ignore_index, label_map, reduce_labels))
        scores = metric.compute()
        results = {
            "mean_iou": scores.mean_iou,
            "mean_accuracy": scores.mean_accuracy,
            "overall_accuracy": scores.pixel_accuracy,
            "per_category_iou": scores.per_class_iou,
            "per_category_accuracy": scores.per_class_accuracy,
        }
        if nan_to_num is not None:
            results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
        return {
            **results,
            "confusion_matrix": scores.confusion_matrix,
            "num_pixels": scores.num_pixels,
            "num_images": scores.num_images,
        }
