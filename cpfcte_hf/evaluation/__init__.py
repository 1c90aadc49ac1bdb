# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Evaluation of predicted masks: the package's mIoU as an `evaluate` metric module (`wsss_mean_iou/`)."""

from __future__ import annotations

from pathlib import Path


WSSS_MEAN_IOU_PATH = Path(__file__).resolve().parent / "wsss_mean_iou"


def load_wsss_mean_iou(**kwargs):
    """The `wsss_mean_iou` metric module, loaded by path (offline); `kwargs` go to `evaluate.load`."""
    import evaluate

    return evaluate.load(str(WSSS_MEAN_IOU_PATH), **kwargs)


__all__ = ["WSSS_MEAN_IOU_PATH", "load_wsss_mean_iou"]
