# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What `cpfcte-hf run` reports: its numbers from the reports its steps wrote (`collect_results`, `headline`), the
stage-2 model it trained (`stage2_model`), the export step's record, and the summary it prints."""

from __future__ import annotations

import json
from pathlib import Path

from .steps import RESUMES, read_step_record


STOPPED = ("failed", "interrupted")  # the statuses of a step that did not end


def _metrics(path: Path) -> dict | None:
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {
        "class_names": report.get("class_names", []),
        "num_images": report.get("num_images"),
        "predictions": {
            name: {
                "mean_iou": entry.get("mean_iou"),
                "per_class_iou": [item.get("iou") for item in entry.get("per_class", [])],
            }
            for name, entry in report.get("predictions", {}).items()
        },
    }


def collect_results(run_dir: Path, held_out: str) -> dict:
    """The run's numbers, from the reports its steps wrote (None where a report is missing)."""
    reports = {
        "pseudo_labels_train": run_dir / "pseudo_labels" / "report" / "metrics.json",
        "stage1_tagged": run_dir / "eval" / "stage1_tagged" / "report" / "metrics.json",
        "stage1_untagged": run_dir / "eval" / "stage1_untagged" / "report" / "metrics.json",
        "stage2_single_scale": run_dir / "eval" / "stage2" / "predictions" / held_out / "report" / "metrics.json",
        "stage2_ms_crf": run_dir / "stage2" / "predictions" / held_out / "report" / "metrics.json",
    }
    return {name: _metrics(path) for name, path in reports.items()}


def export_record(directory: Path, formats: list[str]) -> dict:
    """What the export step wrote (from its export_summary.json): per split, the images exported and left out."""
    record = {"directory": str(directory), "formats": list(formats), "splits": None}
    path = directory / "export_summary.json"
    if path.is_file():
        splits = json.loads(path.read_text()).get("splits", {})
        keys = ("exported", "left_out", "left_out_by_reason", "mask_set")
        record["splits"] = {name: {key: entry.get(key) for key in keys} for name, entry in splits.items()}
    return record


def stage2_model(run_dir: Path) -> dict | None:
    """
    Which model the stage-2 step trained (None before it ran): `model_type` (its checkpoint's, else its settings'),
    `checkpoint` (what it started from: a model, a DeepLab .pth or ResNet weights; None: random weights) and `name`
    for tables ("DeepLab-v2 (ResNet-101)", "segformer (random init)").
    """
    settings = ((read_step_record(run_dir / "stage2") or {}).get("settings") or {}).get("DeepLabModelArguments")
    config = run_dir / "stage2" / "config.json"
    if settings is None and not config.is_file():
        return None
    settings = settings or {}
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    model_type = model_type or settings.get("model_type") or "deeplab_v2"
    starts = [settings.get("model_name_or_path")]
    if model_type == "deeplab_v2":
        starts += [settings.get("init_checkpoint"), settings.get("backbone")]
    checkpoint = next((str(s) for s in starts if s and str(s).lower() != "none"), None)
    start = "random init" if checkpoint is None else Path(checkpoint).name
    if start.startswith("resnet-"):  # microsoft/resnet-101
        start = "ResNet-" + start.split("-", 1)[1]
    name = "DeepLab-v2" if model_type == "deeplab_v2" else model_type
    return {"model_type": model_type, "checkpoint": checkpoint, "name": f"{name} ({start})"}


def _miou(results: dict, report: str, prediction: str):
    entry = (results.get(report) or {}).get("predictions", {}).get(prediction)
    return None if entry is None else entry["mean_iou"]


def headline(results: dict) -> dict:
    """The run's mIoUs (fractions) on the held-out split, and of the training split's pseudo-labels."""
    return {
        "train_pseudo_labels_bpm": _miou(results, "pseudo_labels_train", "BPM"),
        "train_pseudo_labels_crf": _miou(results, "pseudo_labels_train", "CRF"),
        "stage1_tagged_bpm": _miou(results, "stage1_tagged", "BPM"),
        "stage1_tagged_crf": _miou(results, "stage1_tagged", "CRF"),
        "stage1_untagged": _miou(results, "stage1_untagged", "BPM"),
        "stage2": _miou(results, "stage2_single_scale", "MS"),
        "stage2_ms_crf": _miou(results, "stage2_ms_crf", "MS+CRF"),
    }


def format_summary(summary: dict) -> str:
    def percent(value):
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = ["", f"cpfcte-hf run: {summary['output_dir']} ({summary['status']})", ""]
    for name, entry in summary["steps"].items():
        lines.append(f"  {name:<22}{entry['status']:<12}{entry.get('seconds', 0):8.0f} s")
    if any(value is not None for value in summary["mean_iou"].values()):
        lines += ["", "mIoU % (background included):"]
        for name, value in summary["mean_iou"].items():
            lines.append(f"  {name:<26}{percent(value)}")
    return "\n".join(lines)


def _stopped_step(summary: dict) -> tuple[str, dict] | None:
    """The step a run stopped at (interrupted, or failed), None when it completed."""
    stopped = [(name, entry) for name, entry in summary["steps"].items() if entry["status"] in STOPPED]
    if summary["status"] == "complete" or not stopped:
        return None
    return stopped[-1]


def failure_line(summary: dict) -> str | None:
    """The last line of a run that stopped at a step (None when it completed): which step, and what to do next."""
    stopped = _stopped_step(summary)
    if stopped is None:
        return None
    name, entry = stopped
    if entry["status"] == "interrupted":
        return f"the run was interrupted at step {name} (exit status {entry['exit_status']}). The same {RESUMES}."
    return (
        f"the run stopped at step {name} (exit status {entry['exit_status']}; its error is above). The same command "
        "resumes the run once the cause is fixed."
    )


def run_exit_status(summary: dict) -> int:
    """0 for a complete run; an interrupted one exits as its step did (130 for SIGINT, 143 for SIGTERM); 3 for a run
    that stopped at a failed step."""
    stopped = _stopped_step(summary)
    if stopped is None:
        return 0
    return stopped[1]["exit_status"] if stopped[1]["status"] == "interrupted" else 3


__all__ = [
    "collect_results",
    "export_record",
    "failure_line",
    "format_summary",
    "headline",
    "run_exit_status",
    "stage2_model",
]
