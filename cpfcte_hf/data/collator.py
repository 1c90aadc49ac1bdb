# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The batch collators: rows of `transforms.TrainTransform` / `EvalTransform` (and the L_ET views of
`EquivarianceTrainTransform`) stacked into a model batch."""

from collections.abc import Sequence

import torch

from ..models.cpfcte.inference import multi_hot


def labels_to_multi_hot(labels: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """Lists of class ids -> `(B, num_labels)` float32 multi-hot (rows of `inference.multi_hot`); background (0) is
    always set."""
    if not labels:
        return torch.zeros(0, num_labels, dtype=torch.float32)
    return torch.stack([multi_hot({0, *(int(i) for i in ids)}, num_labels) for ids in labels])


EQUIVARIANCE_KEYS = ("view_flips", "et_pixel_values", "et_flips", "et_box")


class EquivarianceCollator:
    """`WeakSegmentationCollator` that also stacks the L_ET views of `EquivarianceTrainTransform`."""

    def __init__(self, num_labels: int | None = None, **kwargs):
        self.collator = WeakSegmentationCollator(num_labels, **kwargs)

    def __call__(self, examples: Sequence[dict]) -> dict:
        batch = self.collator(examples)
        for key in EQUIVARIANCE_KEYS:
            if all(key in example for example in examples):
                batch[key] = torch.stack([torch.as_tensor(example[key]) for example in examples])
        return batch


class WeakSegmentationCollator:
    """Stacks transformed rows into a model batch.

    Returns `{"pixel_values": (B,3,H,W) float32, "labels": (B,C) float32}` plus `"masks": (B,H,W) int64` when the
    rows carry masks (eval transform) and `"ids": list[str]` when `return_ids=True`. Rows whose `labels` are still
    lists of class ids are turned into multi-hot vectors (then `num_labels` is required).

    The model's `forward` takes only `pixel_values` and `labels`: a trainer must pop `masks` and `ids` first.
    """

    def __init__(self, num_labels: int | None = None, return_ids: bool = False, return_masks: bool = True):
        self.num_labels = num_labels
        self.return_ids = return_ids
        self.return_masks = return_masks

    def __call__(self, examples: Sequence[dict]) -> dict:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        if "pixel_values" not in examples[0]:
            raise KeyError(
                "Examples have no 'pixel_values': apply TrainTransform or EvalTransform first, e.g. "
                "`ds.with_transform(TrainTransform.for_dataset(ds, image_processor))`."
            )
        pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
        # uint8 rows are resized images whose augmentation runs after the transfer (TrainTransform with
        # augment_in_loader=False): they stay uint8, a quarter of the bytes to copy.
        batch = {"pixel_values": pixel_values if pixel_values.dtype == torch.uint8 else pixel_values.float()}
        labels = [e["labels"] for e in examples]
        if isinstance(labels[0], torch.Tensor) and labels[0].dtype.is_floating_point:
            batch["labels"] = torch.stack(labels).float()
        else:
            if self.num_labels is None:
                raise ValueError("Rows carry label ids, not multi-hot vectors: pass num_labels to the collator.")
            batch["labels"] = labels_to_multi_hot(labels, self.num_labels)
        if self.return_masks and all("masks" in e for e in examples):
            batch["masks"] = torch.stack([torch.as_tensor(e["masks"]) for e in examples]).long()
        if self.return_ids:
            batch["ids"] = [e.get("id") for e in examples]
        return batch


__all__ = ["EQUIVARIANCE_KEYS", "EquivarianceCollator", "WeakSegmentationCollator", "labels_to_multi_hot"]
