# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`make demo`: the whole method, for real, on the built-in procedural shapes set, on a CPU.

It runs what a VOC user runs, through the same library code:

1. write the shapes set to disk in the VOC layout (`write_shapes_voc`, as `scripts/make_shapes.py` does);
2. train CPF-CTE from scratch on the train split's image-level tags (`run_training`, as `scripts/train.py`);
3. pseudo-label the held-out val split at a higher resolution, with its image-level tags, then dense CRF, and
   score both against the ground truth (`run_pseudo_labeling`, as `scripts/pseudo_label.py`).

Ground-truth masks are never used for training: only for the report (and, if evaluation is on, for watching
the mIoU while training; model selection is off, so the reported split is never used to pick the model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from .cli import describe
from .crf import DenseCRFConfig
from .data.shapes import ShapesConfig, write_shapes_voc
from .pseudo_labeling import PseudoLabelConfig, run_pseudo_labeling
from .trainer import CPFCTETrainingArguments
from .training import DataArguments, ModelArguments, run_training
from .visualization import atomic_write_text


@dataclass
class DemoArguments:
    """The demo's own settings; model, data and training fields come from the same dataclasses as train.py."""

    demo_dir: str = field(default="outputs/demo", metadata={"help": "Everything the demo writes goes here."})
    shapes_num_train: int = field(default=2000, metadata={"help": "Training images (tags only are used)."})
    shapes_num_val: int = field(default=200, metadata={"help": "Held-out images, pseudo-labelled and scored."})
    shapes_image_size: int = field(default=96, metadata={"help": "Side of the procedural images."})
    shapes_num_classes: int = field(default=5, metadata={"help": "Foreground classes."})
    shapes_seed: int = field(default=0, metadata={"help": "Seed of the procedural images."})
    inference_flip: bool = field(default=False, metadata={"help": "Also average the flipped image."})
    crf_workers: int | None = field(default=None, metadata={"help": "CRF processes (default: all CPUs)."})


@contextmanager
def _stage(name: str, timings: dict):
    """Prints a stage's banner and records its wall time in `timings[name]`."""
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - start
    print(f"=== {name}: {timings[name]:.0f} s ===", flush=True)


def run_demo(
    demo_args: DemoArguments,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CPFCTETrainingArguments,
) -> dict:
    """Runs the three stages and returns (and writes to `demo_dir/demo_results.json`) the final numbers."""
    timings: dict[str, float] = {}
    demo_dir = os.path.abspath(demo_args.demo_dir)
    data_dir = os.path.join(demo_dir, "data")
    model_dir = os.path.join(demo_dir, "model")
    pseudo_dir = os.path.join(demo_dir, "pseudo_labels")

    with _stage("1/3 data: procedural shapes in the VOC layout", timings):
        shapes = ShapesConfig(
            num_classes=demo_args.shapes_num_classes,
            image_size=demo_args.shapes_image_size,
            seed=demo_args.shapes_seed,
        )
        written = write_shapes_voc(
            data_dir, num_train=demo_args.shapes_num_train, num_val=demo_args.shapes_num_val, config=shapes
        )
        print(f"{written['splits']} images of {written['class_names']} in {data_dir}", flush=True)

    data_args = dataclasses.replace(data_args, dataset="voc", data_root=data_dir, dataset_option=[])
    training_args.output_dir = model_dir
    with _stage("2/3 train CPF-CTE from image-level tags", timings):
        run_training(model_args, data_args, training_args)

    config = PseudoLabelConfig(
        size=None,  # the checkpoint's inference_size (the preset's, 192)
        flip=demo_args.inference_flip,
        crf_config=DenseCRFConfig(),
        crf_workers=demo_args.crf_workers,
        overwrite=True,
        num_overlays=8,
    )
    with _stage("3/3 pseudo-label the held-out split (BPM + dense CRF) and score it", timings):
        summary = run_pseudo_labeling(
            model=model_dir, out_dir=pseudo_dir, dataset_name="voc", data_root=data_dir, split="val", config=config
        )

    report = summary.report or {}
    predictions = report.get("predictions", {})
    results = {
        "pseudo_label_miou_bpm": predictions.get("BPM", {}).get("mean_iou"),
        "pseudo_label_miou_crf": predictions.get("CRF", {}).get("mean_iou"),
        "per_class_iou": {
            name: {set_name: entry["per_class"][i]["iou"] for set_name, entry in predictions.items()}
            for i, name in enumerate(report.get("class_names", []))
        },
        "num_val_images": demo_args.shapes_num_val,
        "failed_images": summary.failed,
        "seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
        "seconds_total": round(sum(timings.values()), 3),
        "model_dir": model_dir,
        "pseudo_label_dir": pseudo_dir,
        "report_dir": os.path.join(pseudo_dir, "report"),
        "arguments": json.loads(describe(demo_args, model_args, data_args, training_args)),
    }
    atomic_write_text(os.path.join(demo_dir, "demo_results.json"), json.dumps(results, indent=2, default=str) + "\n")
    print(format_demo_results(results), flush=True)
    return results


def format_demo_results(results: dict) -> str:
    """The final table of the demo, for the console."""

    def percent(value):
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = ["", "CPF-CTE demo: pseudo-labels of held-out procedural images (IoU %, background included)", ""]
    lines.append(f"{'class':<14}{'BPM':>7}{'CRF':>7}")
    for name, values in results["per_class_iou"].items():
        lines.append(f"{name:<14}{percent(values.get('BPM')):>7}{percent(values.get('CRF')):>7}")
    lines.append(
        f"{'mIoU':<14}{percent(results['pseudo_label_miou_bpm']):>7}{percent(results['pseudo_label_miou_crf']):>7}"
    )
    lines.append("")
    width = max(len(name) for name in [*results["seconds"], "total"]) + 2
    for name, seconds in results["seconds"].items():
        lines.append(f"{name:<{width}}{seconds:8.0f} s")
    lines.append(f"{'total':<{width}}{results['seconds_total']:8.0f} s")
    lines.append("")
    lines.append(f"checkpoint:   {results['model_dir']}  (from_pretrained / pipeline('image-segmentation'))")
    lines.append(f"masks:        {results['pseudo_label_dir']}/{{bpm,crf}}/<id>.png")
    lines.append(f"report:       {results['report_dir']}/ (metrics.json, per_class_iou.csv/png, overlays/)")
    return "\n".join(lines)


__all__ = ["DemoArguments", "format_demo_results", "run_demo"]
