# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""One results schema: what every evaluation of the project writes and what the model card reads.

The trainer's final evaluation (`<output_dir>/metrics.json`), pseudo-labelling's report
(`<out>/report/metrics.json`), stage 2's evaluation (`<out>/predictions/<split>/report/metrics.json`) and
`scripts/evaluate.py` all write one JSON object of this form:

```
{
  "schema": "cpfcte_hf.results", "schema_version": 1,
  "stage": "training" | "pseudo_labels" | "stage2" | "evaluation",
  "dataset": "voc", "data_root": "data/VOCdevkit/VOC2012", "split": "val",   what it was measured on
  "num_images": 1449, "num_labels": 21, "class_names": ["background", ...], "ignore_index": 255,
  "model": "runs/cpf-cte-voc",                                              the model that made the predictions
  "model_info": {...},                        stage 2: that model's architecture and the training it had
  "command": "scripts/pseudo_label.py --model ...", "settings": {...},        how
  "predictions": {                                                          one entry per prediction set
    "CRF": {"mean_iou": 0.708, "pixel_accuracy": ..., "mean_accuracy": ..., "num_scored": 1449,
            "per_class": [{"class_id": 0, "class_name": "background", "iou": ..., "gt_pixels": ...}, ...], ...}
  }
}
```

Values are fractions in [0, 1] (`None` where nothing was scored). mIoU is over all classes, background included,
from one confusion matrix per split, 255 ignored (`metrics.py`). `read_results` also reads the formats written
before this schema: a report `metrics.json` without `stage`, and the trainer's `eval_results.json`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..models.cpfcte.metrics import IGNORE_INDEX
from ..utils.io import atomic_write_text


SCHEMA = "cpfcte_hf.results"
SCHEMA_VERSION = 1
RESULTS_FILE = "metrics.json"
STAGES = ("training", "pseudo_labels", "stage2", "evaluation")
# Prediction sets (lower case; `evaluate` names them after their folders) -> the stage that makes them: for reports
# written before `stage` was recorded, and for `evaluate`'s reports of another command's masks.
PREDICTION_SET_STAGES = {
    "bpm": "pseudo_labels",
    "crf": "pseudo_labels",
    "ms": "stage2",
    "ms+crf": "stage2",
    "ms_crf": "stage2",
}


class ResultsError(ValueError):
    """A results file that cannot be read: not JSON, not of this schema, or of another model's classes."""


def results_record(
    stage: str,
    predictions: Mapping[str, Mapping],
    class_names: Sequence[str],
    *,
    dataset: str | None = None,
    split: str | None = None,
    data_root: str | os.PathLike | None = None,
    num_images: int | None = None,
    model: str | os.PathLike | None = None,
    settings: Mapping | None = None,
    command: str | None = None,
    **extra,
) -> dict:
    """
    A results object of the schema above. `predictions` maps a prediction-set name to its scores (`mean_iou`,
    `pixel_accuracy`, `mean_accuracy`, `num_scored`, `per_class` rows, and anything else worth keeping);
    `command` defaults to this process's command line.
    """
    if stage not in STAGES:
        raise ValueError(f"Unknown results stage {stage!r}; expected one of {STAGES}.")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "dataset": dataset,
        "data_root": None if data_root is None else os.fspath(data_root),
        "split": split,
        "num_images": num_images,
        "num_labels": len(class_names),
        "class_names": list(class_names),
        "ignore_index": IGNORE_INDEX,
        "model": None if model is None else os.fspath(model),
        "command": command if command is not None else shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "settings": dict(settings or {}),
        **extra,
        "predictions": {str(name): dict(entry) for name, entry in predictions.items()},
    }


def training_results_record(metrics: Mapping, class_names: Sequence[str], **kwargs) -> dict:
    """The results object of the trainer's final evaluation (`Trainer.evaluate()`'s `eval_*` metrics): one
    prediction set, `BPM` (the pseudo-label argmax at the training resolution, classes masked by the tags)."""
    per_class = [
        {"class_id": i, "class_name": name, "iou": _fraction(metrics.get(f"eval_iou_{name}"))}
        for i, name in enumerate(class_names)
    ]
    entry = {
        "mean_iou": _fraction(metrics.get("eval_mean_iou")),
        "pixel_accuracy": _fraction(metrics.get("eval_pixel_accuracy")),
        "mean_accuracy": _fraction(metrics.get("eval_mean_accuracy")),
        "num_scored": metrics.get("eval_num_images"),
        "per_class": per_class,
    }
    kwargs.setdefault("num_images", metrics.get("eval_num_images"))
    return results_record("training", {"BPM": entry}, class_names, **kwargs)


def write_results(record: Mapping, directory: str | os.PathLike) -> Path:
    """Writes `record` to `directory/metrics.json` atomically; returns the path."""
    path = Path(directory) / RESULTS_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------------- reading


@dataclass
class Results:
    """One results file, read: the schema's fields, and the file it came from.

    `predictions[name]["per_class"]` are rows `{"class_name", "iou", ...}`; `companions` are files of the same
    run worth keeping next to it (per-class CSV/plot, the run's `run_config.json`, `summary.json`).
    """

    path: Path
    stage: str
    class_names: list[str]
    predictions: dict[str, dict]
    dataset: str | None = None
    split: str | None = None
    data_root: str | None = None
    num_images: int | None = None
    model: str | None = None
    settings: dict = field(default_factory=dict)
    companions: list[Path] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)

    def mean_iou(self, name: str) -> float | None:
        return _fraction((self.predictions.get(name) or {}).get("mean_iou"))

    def per_class_iou(self, name: str) -> dict[str, float | None]:
        rows = (self.predictions.get(name) or {}).get("per_class") or []
        return {row["class_name"]: _fraction(row.get("iou")) for row in rows}


def find_results(source: str | os.PathLike) -> list[Path]:
    """
    The results files of a file or directory: a `metrics.json` (or legacy `eval_results.json`) itself; in a
    directory its `metrics.json`, `report/metrics.json`, `predictions/*/report/metrics.json`, or a legacy
    `eval_results.json`.

    Raises:
        ResultsError: nothing there, or several stage-2 reports (the caller must say which split).
    """
    path = Path(source)
    if path.is_file():
        if path.name in (RESULTS_FILE, "eval_results.json", "all_results.json"):
            return [path]
        if path.name == "summary.json" and (path.parent / "report" / RESULTS_FILE).is_file():
            return [path.parent / "report" / RESULTS_FILE]
        raise ResultsError(
            f"--results {path}: unknown results file. Expected metrics.json (written by training, pseudo-labelling, "
            "evaluation and stage 2) or a trainer's eval_results.json."
        )
    if not path.is_dir():
        raise ResultsError(f"--results {path}: no such file or directory.")
    found = [p for p in (path / RESULTS_FILE, path / "report" / RESULTS_FILE) if p.is_file()]
    stage2 = sorted(path.glob(f"predictions/*/report/{RESULTS_FILE}"))
    if len(stage2) > 1:
        raise ResultsError(
            f"--results {path}: several stage-2 reports ({', '.join(map(str, stage2))}); pass the report directory "
            "of the split the card should show."
        )
    found += stage2
    if not found and (path / "eval_results.json").is_file():
        found.append(path / "eval_results.json")
    if not found:
        raise ResultsError(
            f"--results {path}: no results in this directory. Expected metrics.json, report/metrics.json, "
            "predictions/<split>/report/metrics.json, or a trainer's eval_results.json."
        )
    return found


def read_results(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> Results:
    """
    Reads one results file (this schema, a report written before it, or a trainer's `eval_results.json`).

    Raises:
        ResultsError: not a JSON object, no predictions or class names, or measured on other classes than
            `class_names`.
    """
    path = Path(path)
    data = read_json(path)
    run_config = path.parent / "run_config.json"
    if "predictions" not in data and "eval_mean_iou" in data and "class_names" not in data:
        data = _legacy_training(data, path, class_names, run_config)
    elif "eval_loss" in data or path.name in ("eval_results.json", "all_results.json"):
        raise ResultsError(
            f"Results file {path} has no `eval_mean_iou`: the run evaluated without ground-truth masks. Pass a "
            "pseudo-label report instead."
        )
    if not isinstance(data.get("predictions"), dict) or not isinstance(data.get("class_names"), list):
        raise ResultsError(
            f"Results file {path} is not an evaluation report (no `predictions` / `class_names`): expected a "
            "metrics.json written by training, pseudo-labelling, evaluation or stage 2."
        )
    if class_names is not None and list(data["class_names"]) != list(class_names):
        names = data["class_names"]
        raise ResultsError(
            f"Results file {path} was measured on {len(names)} classes {names[:6]}..., but the model has "
            f"{len(class_names)} classes {list(class_names)[:6]}...: these results are not this model's."
        )
    stage = data.get("stage")
    if stage is None:  # a report written before the schema: its prediction sets say which stage wrote it
        stages = {PREDICTION_SET_STAGES.get(str(name).lower(), "evaluation") for name in data["predictions"]}
        stage = stages.pop() if len(stages) == 1 else "evaluation"
    companions = [path.parent / n for n in ("per_class_iou.csv", "per_class_iou.png") if (path.parent / n).is_file()]
    if path.parent.name == "report" and (path.parent.parent / "summary.json").is_file():
        companions.append(path.parent.parent / "summary.json")
    if stage == "training":
        companions += [path.parent / n for n in ("eval_results.json", "train_results.json", "run_config.json")]
        companions = [p for p in dict.fromkeys(companions) if p.is_file() and p != path]
    model = data.get("model")
    if model is None and path.parent.name == "report" and (path.parent.parent / "summary.json").is_file():
        model = read_json(path.parent.parent / "summary.json").get("model")  # pseudo-label reports before the schema
    return Results(
        path=path,
        stage=stage,
        class_names=list(data["class_names"]),
        predictions=data["predictions"],
        dataset=data.get("dataset"),
        split=data.get("split"),
        data_root=data.get("data_root"),
        num_images=data.get("num_images"),
        model=model,
        settings=data.get("settings") or {},
        companions=companions,
        model_info=data.get("model_info") or {},
    )


def _legacy_training(metrics: dict, path: Path, class_names, run_config: Path) -> dict:
    """A trainer's `eval_results.json` (before `metrics.json` was written next to it) as a results object."""
    names = list(class_names or [k[len("eval_iou_") :] for k in metrics if k.startswith("eval_iou_")])
    present = {k[len("eval_iou_") :] for k in metrics if k.startswith("eval_iou_")}
    if present and class_names is not None and present != set(class_names):
        raise ResultsError(
            f"Results file {path} was measured on classes {sorted(present)[:6]}..., but the model has classes "
            f"{list(class_names)[:6]}...: these results are not this model's."
        )
    data_args = read_json(run_config).get("DataArguments", {}) if run_config.is_file() else {}
    return training_results_record(
        metrics,
        names,
        dataset=data_args.get("dataset"),
        split=data_args.get("eval_split"),
        data_root=data_args.get("data_root"),
        model=str(path.parent),
        command="",
    )


def read_json(path: str | os.PathLike, missing_ok: bool = False) -> dict | None:
    """The JSON object in `path` (`None` for a missing file if `missing_ok`).

    Raises:
        ResultsError: not valid JSON, or not an object.
    """
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ResultsError(f"{path} does not hold a JSON object.")
    return data


def _fraction(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def check_prediction_dirs(directories: Sequence[str | os.PathLike]) -> None:
    """Raises before anything is written if a prediction directory is missing, not a directory, or holds no mask.

    Raises:
        FileNotFoundError: a directory does not exist (a typo must not create `typo/report` and "score 0").
        NotADirectoryError: it is a file.
        ValueError: it holds no `.png` file at any depth.
    """
    for directory in map(Path, directories):
        if not directory.exists():
            raise FileNotFoundError(f"Prediction directory {str(directory)!r} not found.")
        if not directory.is_dir():
            raise NotADirectoryError(f"Prediction directory {str(directory)!r} is not a directory.")
        if next(iter(p for p in directory.rglob("*.png") if not p.name.startswith(".")), None) is None:
            raise ValueError(f"Prediction directory {str(directory)!r} holds no mask (.png) files.")


__all__ = [
    "check_prediction_dirs",
    "PREDICTION_SET_STAGES",
    "RESULTS_FILE",
    "SCHEMA",
    "STAGES",
    "Results",
    "ResultsError",
    "find_results",
    "read_json",
    "read_results",
    "results_record",
    "training_results_record",
    "write_results",
]
