# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What an export works on: the checked labelled output folder (`LabelledOutput`), each exported image
(`ExportImage`), the images of a split sorted into exported and left out (`Selection`), and `ExportError`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..prediction.sources import ImageSource


# Why an image is left out: the key counted in export_summary.json -> the words printed and put on the card.
LEFT_OUT_REASONS = {
    "failed": "failed when labelled",
    "skipped_by_loader": "skipped by the loader",
    "no_mask": "no mask in the folder",
    "not_recorded": "no record of the image its mask was made from",
    "changed": "changed since its mask was made (other image bytes or tags)",
    "rejected": "rejected in review (review.json)",
    "size_mismatch": "mask and image sizes differ",
}


class ExportError(ValueError):
    """Bad input to an export: not a labelled output, records that disagree, a mask value beyond the classes."""


@dataclass
class LabelledOutput:
    """A labelled output folder, checked (see `read_labelled_output`)."""

    directory: Path
    stage: str  # "pseudo_labels" (stage 1) or "stage2"
    mask_set: str  # the prediction set exported ("CRF", "BPM", "MS+CRF", "MS")
    mask_dir: Path
    class_names: list[str]
    dataset: str | None
    data_root: str | None
    split: str
    summary: dict
    fingerprint: dict
    metrics: dict | None = None  # report/metrics.json when the split had ground truth

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def id2label(self) -> dict[str, str]:
        return {str(i): name for i, name in enumerate(self.class_names)}


@dataclass
class ExportImage:
    """One image whose mask is exported: where its bytes are, its mask, and what `scan_masks` found."""

    id: str
    index: int  # in the split as loaded
    source: ImageSource
    mask_path: Path
    width: int = 0
    height: int = 0
    extension: str = ".png"
    classes: list[int] = field(default_factory=list)  # class ids present in the mask (255 = ignore excluded)

    def image_bytes(self) -> bytes:
        """The image's own bytes, as stored (never re-encoded)."""
        if self.source.path is not None:
            return Path(self.source.path).read_bytes()
        return bytes(self.source.data)


@dataclass
class Selection:
    """The images of one split that are exported, and the ones left out with why (`{"id", "reason", "detail"}`)."""

    labelled: LabelledOutput
    images: list[ExportImage]
    left_out: list[dict]

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(entry["reason"] for entry in self.left_out)
        return {reason: counts[reason] for reason in LEFT_OUT_REASONS if counts[reason]}


__all__ = ["LEFT_OUT_REASONS", "ExportError", "ExportImage", "LabelledOutput", "Selection"]
