# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What a run left on disk, read back for its report (and, later, for reviewing it).

A run's folder is read as it is on disk, so that a report can be rebuilt, or reviewed, long after the run:

- a prediction job's folder (`cpfcte-hf label`, stage 2's `predict_split`): `summary.json` (counts, failures with
  reasons, images the loader skipped, the prediction sets), `fingerprint.json` (the settings that made the masks),
  the masks, `image_scores.jsonl` (stage 1's image-level scores, `cpfcte_hf.evaluation.image_records`) and, with ground truth,
  `report/metrics.json` and `report/per_image.json`;
- an evaluation's report folder (`cpfcte-hf evaluate`): `metrics.json` (it names the prediction folders) and
  `per_image.json`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.fingerprint import read_fingerprint
from ..image_records import read_image_scores, read_per_image
from ..results import read_json


SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.json"
REPORT_SUBDIR = "report"
# Prediction sets of summaries written before `prediction_sets` was recorded.
LEGACY_SETS = {"pseudo_labels": {"BPM": "bpm", "CRF": "crf"}, "stage2": {"MS": "ms", "MS+CRF": "ms_crf"}}


class NotARunDirectory(ValueError):
    """A folder that holds neither a prediction job's `summary.json` nor an evaluation's `metrics.json`."""


@dataclass
class RunRecords:
    """What a run left on disk (see the module docstring)."""

    directory: Path
    stage: str
    sets: dict[str, Path]
    class_names: list[str]
    summary: dict | None = None
    metrics: dict | None = None
    per_image: dict | None = None
    image_scores: dict[str, list[float]] = field(default_factory=dict)
    fingerprint: dict | None = None


def read_run_records(directory: str | os.PathLike) -> RunRecords:
    """
    Reads a run's folder (see the module docstring).

    Raises:
        NotARunDirectory: neither `summary.json` nor `metrics.json` is there; the message names the folder.
        ValueError: a record that is not valid JSON (the message names the file).
    """
    directory = Path(directory)
    summary = read_json(directory / SUMMARY_FILE, missing_ok=True)
    if summary is not None:
        stage = summary.get("stage", "pseudo_labels")
        sets = summary.get("prediction_sets") or {
            name: folder for name, folder in LEGACY_SETS.get(stage, {}).items() if (directory / folder).is_dir()
        }
        report_dir = directory / REPORT_SUBDIR
        metrics = read_json(report_dir / METRICS_FILE, missing_ok=True)
        fingerprint = read_fingerprint(directory)
        names = summary.get("class_names") or (metrics or {}).get("class_names")
        if not names and fingerprint and fingerprint.get("id2label"):
            names = [fingerprint["id2label"][key] for key in sorted(fingerprint["id2label"], key=int)]
        return RunRecords(
            directory=directory,
            stage=stage,
            sets={name: directory / folder for name, folder in sets.items()},
            class_names=list(names or []),
            summary=summary,
            metrics=metrics,
            per_image=read_per_image(report_dir),
            image_scores=read_image_scores(directory),
            fingerprint=fingerprint,
        )
    metrics = read_json(directory / METRICS_FILE, missing_ok=True)
    if metrics is None or not isinstance(metrics.get("predictions"), dict):
        raise NotARunDirectory(
            f"{str(directory)!r} is not the output of a run: it has no {SUMMARY_FILE} (written by `cpfcte-hf label` "
            f"and stage-2 prediction) and no {METRICS_FILE} of an evaluation."
        )
    return RunRecords(
        directory=directory,
        stage=metrics.get("stage") or "evaluation",
        sets={name: Path(entry["directory"]) for name, entry in metrics["predictions"].items()},
        class_names=list(metrics.get("class_names") or []),
        metrics=metrics,
        per_image=read_per_image(directory),
    )


__all__ = ["NotARunDirectory", "RunRecords", "read_run_records"]
