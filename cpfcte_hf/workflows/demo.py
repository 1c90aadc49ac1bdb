# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`make demo` (`cpfcte-hf demo` = `cpfcte-hf run --config demo`): the whole method, for real, on the built-in
procedural shapes set, on a CPU, through the same steps a VOC user runs (`cpfcte_hf/workflows/run.py`):

1. write the shapes set to disk in the VOC layout;
2. train CPF-CTE from scratch on the train split's image-level tags (stage 1);
3. pseudo-label the train split at a higher resolution with its tags, then dense CRF;
4. train a small DeepLab-v2 on those masks (stage 2; the preset's `train_segmenter:` section, alias `train_deeplab:`,
   may name another transformers segmenter, e.g. `model_type: segformer`);
5. score on the held-out val split: stage-1 pseudo-labels with tags (BPM, CRF), stage 1 without tags, stage 2
   without tags at one scale and with multi-scale + CRF; per-class tables, plots and overlays in each report/.

Ground-truth masks are never used for training, only for the reports. This module turns the run's summary into
`demo_results.json` and the console table.
"""

from __future__ import annotations

import json
import os

from ..utils.io import atomic_write_text


# (column of the console table, report of `collect_results`, prediction set in that report)
COLUMNS = (
    ("BPM", "stage1_tagged", "BPM"),
    ("CRF", "stage1_tagged", "CRF"),
    ("S1 untagged", "stage1_untagged", "BPM"),
    ("S2", "stage2_single_scale", "MS"),
    ("S2 MS+CRF", "stage2_ms_crf", "MS+CRF"),
)


def demo_results(summary: dict) -> dict:
    """demo_results.json from a `run` summary: the stage-1 keys of earlier demos plus the stage-2 numbers."""
    run_dir = summary["output_dir"]
    results, mean_iou = summary["results"], summary["mean_iou"]
    tagged = results.get("stage1_tagged") or {}
    class_names = tagged.get("class_names") or next(
        (report["class_names"] for report in results.values() if report), []
    )
    per_class = {}
    for index, name in enumerate(class_names):
        per_class[name] = {}
        for column, report, prediction in COLUMNS:
            entry = (results.get(report) or {}).get("predictions", {}).get(prediction)
            if entry is not None and index < len(entry["per_class_iou"]):
                per_class[name][column] = entry["per_class_iou"][index]
    steps = summary["steps"]
    failed_images = 0
    summary_path = os.path.join(run_dir, "eval", "stage1_tagged", "summary.json")
    if os.path.isfile(summary_path):
        failed_images = len(json.loads(open(summary_path).read()).get("failures", []))
    return {
        "pseudo_label_miou_bpm": mean_iou["stage1_tagged_bpm"],
        "pseudo_label_miou_crf": mean_iou["stage1_tagged_crf"],
        "stage1_untagged_miou": mean_iou["stage1_untagged"],
        "stage2_miou": mean_iou["stage2"],
        "stage2_miou_ms_crf": mean_iou["stage2_ms_crf"],
        "train_pseudo_label_miou_bpm": mean_iou["train_pseudo_labels_bpm"],
        "train_pseudo_label_miou_crf": mean_iou["train_pseudo_labels_crf"],
        "per_class_iou": per_class,
        "num_val_images": tagged.get("num_images"),
        "failed_images": failed_images,
        "status": summary["status"],
        "steps": {name: entry["status"] for name, entry in steps.items()},
        "seconds": {name: entry["seconds"] for name, entry in steps.items()},
        "seconds_total": summary["seconds_total"],
        "model_dir": os.path.join(run_dir, "stage1"),
        "stage2_model_dir": os.path.join(run_dir, "stage2"),
        "stage2_model": summary.get("stage2_model"),
        "pseudo_label_dir": os.path.join(run_dir, "eval", "stage1_tagged"),
        "train_pseudo_label_dir": os.path.join(run_dir, "pseudo_labels"),
        "report_dir": os.path.join(run_dir, "eval", "stage1_tagged", "report"),
        "stage2_report_dir": os.path.join(
            run_dir, "stage2", "predictions", summary["arguments"]["eval_split"], "report"
        ),
        "arguments": summary["arguments"],
    }


def write_demo_results(summary: dict) -> dict:
    results = demo_results(summary)
    path = os.path.join(summary["output_dir"], "demo_results.json")
    atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")
    return results


def format_demo_results(results: dict) -> str:
    """The final table of the demo, for the console."""

    def percent(value):
        return "n/a" if value is None else f"{100 * value:.1f}"

    header = [column for column, _, _ in COLUMNS]
    stage2 = (results.get("stage2_model") or {}).get("name") or "DeepLab-v2"
    lines = [
        "",
        "CPF-CTE demo on held-out procedural images (IoU %, background included). Stage 1 with the image tags: BPM,",
        f"CRF; stage 1 without tags; stage 2 ({stage2} trained on the CRF pseudo-labels), no tags: one scale, MS+CRF.",
        "",
        f"{'':<14}{'stage 1: CPF-CTE':>39}    stage 2: {stage2}",
        f"{'class':<14}" + "".join(f"{name:>13}" for name in header),
    ]
    for name, values in results["per_class_iou"].items():
        lines.append(f"{name:<14}" + "".join(f"{percent(values.get(column)):>13}" for column in header))
    means = [
        results["pseudo_label_miou_bpm"],
        results["pseudo_label_miou_crf"],
        results["stage1_untagged_miou"],
        results["stage2_miou"],
        results["stage2_miou_ms_crf"],
    ]
    lines.append(f"{'mIoU':<14}" + "".join(f"{percent(value):>13}" for value in means))
    lines.append("")
    lines.append(
        f"training-split pseudo-labels (stage 2's targets): BPM {percent(results['train_pseudo_label_miou_bpm'])}, "
        f"CRF {percent(results['train_pseudo_label_miou_crf'])}"
    )
    lines.append("")
    width = max(len(name) for name in [*results["seconds"], "total"]) + 2
    for name, seconds in results["seconds"].items():
        lines.append(f"{name:<{width}}{seconds:8.0f} s  ({results['steps'][name]})")
    lines.append(f"{'total':<{width}}{results['seconds_total']:8.0f} s")
    lines.append("")
    lines.append(
        f"stage 1:      {results['model_dir']}  (from_pretrained / pipeline('image-segmentation'), with tags)"
    )
    lines.append(
        f"stage 2:      {results['stage2_model_dir']}  ({stage2}; pipeline('image-segmentation'), untagged images)"
    )
    lines.append(f"masks:        {results['pseudo_label_dir']}/{{bpm,crf}}/<id>.png")
    lines.append(
        f"reports:      {results['report_dir']}/, {results['stage2_report_dir']}/ (metrics, per-class, overlays)"
    )
    return "\n".join(lines)


__all__ = ["demo_results", "format_demo_results", "write_demo_results"]
