# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Scoring masks against ground truth and reporting it: one streaming confusion matrix per prediction set
(`evaluate_predictions`), the report files (metrics.json, per_class_iou.csv and .png, per_image.json, overlays/,
report.html), the console table, and the `evaluate` command's job (`run_evaluation`), which both stages use.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import check_single_split, load_split
from ..models.cpfcte.class_names import dataset_class_names, mapping_is_identity
from ..models.cpfcte.image_processing_cpfcte import to_rgb_array
from ..models.cpfcte.metrics import IGNORE_INDEX, SegmentationMetric, confusion_matrix
from ..models.cpfcte.visualization import plot_per_class_iou, read_mask, save_overlay_panels
from ..utils.arguments import parse_key_values  # noqa: F401  (re-exported: scripts and stage 2 import it from here)
from ..utils.distributed import distributed_state, finish_distributed, shard_indices
from ..utils.io import atomic_write_text
from ..utils.output_dir import hold_output_dir, prepare_output_dir
from ..utils.progress import progress_bar
from .html_report import REPORT_FILE, write_html_report
from .image_records import per_image_scores, write_per_image
from .results import check_prediction_dirs, results_record, write_results


logger = logging.getLogger(__name__)


def write_report_page(out_dir: str | os.PathLike, dataset, state=None, progress: bool = False) -> str | None:
    """`OUT/report.html` of a finished job (`html_report.write_html_report`), once its summary is on disk. A page
    that cannot be written (a full disk, a record it cannot read) is a warning: the masks are what the run is for.
    Returns the page's path on the main process when written."""
    state = state if state is not None else distributed_state()
    state.wait_for_everyone()  # the main process wrote the summary the page is built from
    try:
        path = write_html_report(out_dir, dataset, state=state, progress=progress)
    except (OSError, ValueError) as error:
        logger.warning(f"{Path(out_dir) / REPORT_FILE} not written: {type(error).__name__}: {error}")
        return None
    return None if path is None else str(path)


def evaluate_predictions(
    dataset,
    predictions: Mapping[str, str | os.PathLike],
    report_dir: str | os.PathLike | None,
    class_names: Sequence[str] | None = None,
    num_overlays: int = 4,
    dataset_name: str | None = None,
    split: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = True,
    class_mapping: Sequence[int] | None = None,
    **record,
) -> dict:
    """
    Scores directories of mask PNGs (`<dir>/<id>.png`, class ids, e.g. from `generate_pseudo_labels`, stage 2, or
    any other method) against the dataset's `mask` column, over the whole split.

    Args:
        dataset: a `datasets.Dataset` with `id` and `mask` columns (and `image` for the overlays).
        predictions: `{name: directory}`, e.g. `{"BPM": out/"bpm", "CRF": out/"crf"}`.
        report_dir: where to write `metrics.json`, `per_class_iou.csv`, `per_class_iou.png`, `per_image.json`
            (each image's mIoU per set, `cpfcte_hf.evaluation.image_records`), `overlays/` (`None`: compute only).
        class_names: the C class names of the predictions (default: the dataset's ClassLabel names).
        class_mapping: `class_mapping[dataset class id]` = the id of that class in `class_names`, for ground truth
            whose class list differs from the predictions' (see `cpfcte_hf.models.cpfcte.class_names.map_class_names`).
        record: what else the results record says (`stage`, `model`, `data_root`, `settings`, `command`: see
            `results.results_record`; the stage defaults to "evaluation").

    Returns:
        The content of `metrics.json` (the schema of `results.py`): per prediction set the mIoU, pixel accuracy,
        per-class IoU, and how many images were scored, had no prediction file (`missing`) or could not be scored
        (`failed`, with reasons).
        Under several processes each scores its share and the confusion matrices are summed.
    """
    check_single_split(dataset)
    names = list(class_names) if class_names is not None else dataset_class_names(dataset)
    predictions = _prediction_dirs(dataset, predictions)
    state = distributed_state()
    scores = _Scores.empty(predictions, len(names), ignore_index)
    scores.score_share(dataset, predictions, _class_lookup(class_mapping, ignore_index), progress, state)
    scores = scores.gathered(state)
    report = results_record(
        record.pop("stage", "evaluation"),
        {},
        names,
        dataset=dataset_name,
        split=split,
        num_images=len(dataset),
        ground_truth_unreadable=scores.gt_failed,
        **record,
    )
    report["ignore_index"] = ignore_index
    report["predictions"].update({name: scores.entry(name, folder, names) for name, folder in predictions.items()})
    if state.is_main_process and report_dir is not None:
        write_report(report, report_dir)
        write_per_image(report_dir, scores.per_image, names, list(predictions))
        if num_overlays > 0 and "image" in dataset.column_names:
            _write_overlays(dataset, predictions, Path(report_dir) / "overlays", names, num_overlays)
    return report


def _prediction_dirs(dataset, predictions: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """`{name: Path}` of the prediction directories, refused before anything is scored if the dataset has no
    ground truth or a directory is not one."""
    if "mask" not in dataset.column_names:
        raise ValueError("The dataset has no `mask` column: there is no ground truth to evaluate against.")
    predictions = {str(name): Path(directory) for name, directory in predictions.items()}
    for name, directory in predictions.items():
        if not directory.is_dir():
            raise NotADirectoryError(
                f"Prediction directory {str(directory)!r} ({name}) does not exist or is not a directory."
            )
    return predictions


def _class_lookup(class_mapping: Sequence[int] | None, ignore_index: int) -> np.ndarray | None:
    """The table that maps the ground truth's class ids onto the predictions' (`None`: they are the same)."""
    if class_mapping is None or mapping_is_identity(class_mapping):
        return None
    lookup = np.full(256, ignore_index, np.uint8)  # ids the dataset does not name are ignored
    lookup[: len(class_mapping)] = class_mapping
    lookup[ignore_index] = ignore_index
    return lookup


@dataclass
class _Scores:
    """What `evaluate_predictions` found, per prediction set: the streaming confusion matrix, the ids without a
    prediction file (`missing`) or whose file could not be scored (`failed`); the ground truths that could not be
    read; each image's own scores (`image_records.per_image_scores`, for the report)."""

    metrics: dict[str, SegmentationMetric]
    missing: dict[str, list[str]]
    failed: dict[str, list[dict]]
    gt_failed: list[dict] = field(default_factory=list)
    per_image: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def empty(cls, predictions: Mapping[str, Path], num_labels: int, ignore_index: int) -> _Scores:
        return cls(
            metrics={name: SegmentationMetric(num_labels, ignore_index) for name in predictions},
            missing={name: [] for name in predictions},
            failed={name: [] for name in predictions},
        )

    def score_share(self, dataset, predictions: Mapping[str, Path], lookup, progress: bool, state) -> None:
        """Scores this process's share of the split (`shard_indices`) against its ground truth."""
        masks_only = dataset.select_columns([c for c in ("id", "mask") if c in dataset.column_names])
        indices = shard_indices(len(dataset), state)
        bar = progress_bar(len(indices), 0, enabled=progress and state.is_main_process, desc="evaluate")
        for index in indices:
            row = masks_only[index]
            bar.update(1)
            reference = self.ground_truth(str(row["id"]), row["mask"], lookup)
            if reference is not None:
                self.score_image(str(row["id"]), reference, predictions)
        bar.close()

    def ground_truth(self, image_id: str, mask, lookup) -> np.ndarray | None:
        """The image's ground truth in the predictions' class ids; `None` (noted in `gt_failed`) if unreadable."""
        if mask is None:
            self.gt_failed.append({"id": image_id, "error": "no ground-truth mask"})
            return None
        try:
            reference = _mask_array(mask)
            return lookup[reference] if lookup is not None else reference
        except Exception as error:  # noqa: BLE001
            self.gt_failed.append({"id": image_id, "error": f"{type(error).__name__}: {error}"})
            return None

    def score_image(self, image_id: str, reference: np.ndarray, predictions: Mapping[str, Path]) -> None:
        """Adds each set's mask of the image to its confusion matrix, and the image's own scores."""
        image = self.per_image[image_id] = {"gt_classes": [], "mean_iou": {}, "errors": {}}
        for name, directory in predictions.items():
            path = directory / f"{image_id}.png"
            if not path.is_file():
                self.missing[name].append(image_id)
                continue
            metric = self.metrics[name]
            try:
                matrix = confusion_matrix(read_mask(path), reference, metric.num_labels, metric.ignore_index)
            except Exception as error:  # noqa: BLE001 - a bad file is reported, the rest is scored
                self.failed[name].append({"id": image_id, "error": f"{path}: {error}"})
                image["errors"][name] = str(error)
                continue
            metric.add_confusion_matrix(matrix)
            image["mean_iou"][name], image["gt_classes"] = per_image_scores(matrix)

    def gathered(self, state) -> _Scores:
        """The scores of every process: confusion matrices summed, lists joined (missing ids sorted); `self` alone."""
        if state.num_processes == 1:
            return self
        from accelerate.utils import gather_object

        for metric in self.metrics.values():
            metric.all_reduce(state.device)
        gathered = gather_object([(self.missing, self.failed, self.gt_failed, self.per_image)])
        return _Scores(
            metrics=self.metrics,
            missing={n: sorted(i for m, *_ in gathered for i in m[n]) for n in self.missing},
            failed={n: [f for _, fl, *_ in gathered for f in fl[n]] for n in self.failed},
            gt_failed=[g for _, _, gl, _ in gathered for g in gl],
            per_image={image_id: entry for *_, images in gathered for image_id, entry in images.items()},
        )

    def entry(self, name: str, directory: Path, class_names: Sequence[str]) -> dict:
        """The report's entry of prediction set `name` (see `results.py`), with a warning when images went unscored."""
        scores, missing, failed = self.metrics[name].compute(), self.missing[name], self.failed[name]
        if missing or failed:
            logger.warning(
                f"{name}: {len(missing)} image(s) without a prediction in {directory}, "
                f"{len(failed)} unreadable or of the wrong size; scored {scores.num_images}."
            )
        return {
            "directory": str(directory),
            "mean_iou": _finite(scores.mean_iou),
            "pixel_accuracy": _finite(scores.pixel_accuracy),
            "mean_accuracy": _finite(scores.mean_accuracy),
            "num_scored": scores.num_images,
            "num_missing": len(missing),
            "num_failed": len(failed),
            "missing_ids": missing[:50],
            "failures": failed[:50],
            "per_class": scores.per_class_table(class_names),
        }


def _mask_array(mask) -> np.ndarray:
    if hasattr(mask, "mode"):  # PIL: palette and grey PNGs hold the class ids
        if mask.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"ground-truth mask has mode {mask.mode!r}, not class ids")
        return np.asarray(mask).astype(np.uint8)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"ground-truth mask has shape {array.shape}, expected (H, W)")
    return array


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def write_report(report: dict, report_dir: str | os.PathLike) -> None:
    """Writes `metrics.json`, `per_class_iou.csv` and `per_class_iou.png` (each atomically) for `report`."""
    report_dir = prepare_output_dir(report_dir)
    write_results(report, report_dir)
    atomic_write_text(report_dir / "per_class_iou.csv", report_csv(report))
    names = report["class_names"]
    series = {name: [row["iou"] for row in entry["per_class"]] for name, entry in report["predictions"].items()}
    title = " ".join(str(v) for v in (report.get("dataset"), report.get("split")) if v) or None
    plot_per_class_iou(report_dir / "per_class_iou.png", series, names, title=title)


def report_csv(report: dict) -> str:
    """Per-class table: `class_id,class_name,gt_pixels,<set>_iou...` and a final `mean` row (IoU in [0, 1])."""
    sets = list(report["predictions"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_id", "class_name", "gt_pixels", *[f"{s}_iou" for s in sets]])
    first = report["predictions"][sets[0]]["per_class"] if sets else []
    for i, name in enumerate(report["class_names"]):
        values = [report["predictions"][s]["per_class"][i]["iou"] for s in sets]
        gt_pixels = first[i]["gt_pixels"] if first else ""
        writer.writerow([i, name, gt_pixels, *["" if v is None else f"{v:.6f}" for v in values]])
    means = [report["predictions"][s]["mean_iou"] for s in sets]
    writer.writerow(["", "mean", "", *["" if v is None else f"{v:.6f}" for v in means]])
    return buffer.getvalue()


def format_report(report: dict) -> str:
    """The per-class table as text (IoU in %), for the console."""
    sets = list(report["predictions"])
    width = max([len(n) for n in report["class_names"]] + [10])
    lines = [f"{'class':<{width}} " + " ".join(f"{s:>8}" for s in sets)]
    for i, name in enumerate(report["class_names"]):
        cells = []
        for s in sets:
            value = report["predictions"][s]["per_class"][i]["iou"]
            cells.append(f"{'-':>8}" if value is None else f"{100 * value:8.2f}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    cells = []
    for s in sets:
        value = report["predictions"][s]["mean_iou"]
        cells.append(f"{'-':>8}" if value is None else f"{100 * value:8.2f}")
    lines.append(f"{'mIoU':<{width}} " + " ".join(cells))
    for s in sets:
        entry = report["predictions"][s]
        lines.append(
            f"{s}: scored {entry['num_scored']} image(s), missing {entry['num_missing']}, failed {entry['num_failed']}"
        )
    return "\n".join(lines)


def _write_overlays(dataset, predictions, directory: Path, class_names, count: int) -> None:
    written = 0
    for index in range(len(dataset)):
        if written >= count:
            break
        row = dataset[index]
        if row.get("mask") is None:
            continue
        image_id = str(row["id"])
        try:
            image = to_rgb_array(row["image"])
            panels = {"ground truth": _mask_array(row["mask"])}
            for name, folder in predictions.items():
                path = Path(folder) / f"{image_id}.png"
                panels[name] = read_mask(path) if path.is_file() else None
            save_overlay_panels(directory / f"{image_id}.png", image, panels, class_names, title=image_id, alpha=0.6)
            written += 1
        except Exception as error:  # noqa: BLE001 - an overlay is a nicety, never a reason to fail the report
            logger.warning(f"[{image_id}] overlay not written: {error}")


def run_evaluation(
    predictions: Sequence[str | os.PathLike],
    dataset=None,
    dataset_name: str | None = None,
    data_root: str | os.PathLike | None = None,
    split: str = "val",
    report_dir: str | os.PathLike | None = None,
    num_overlays: int = 4,
    dataset_kwargs: dict | None = None,
    report_html: bool = True,
) -> dict:
    """
    `scripts/evaluate.py` in one call: scores each prediction directory (named by its folder name) against the
    split and writes the report to `report_dir` (default: `<first prediction dir>/report`), with `report.html`
    unless `report_html` is False. One run at a time holds `report_dir` (`cpfcte_hf.prediction.job.hold_output_dir`).
    """
    directories = [Path(p) for p in predictions]
    named = {}
    for directory in directories:
        name = directory.name or str(directory)
        while name in named:
            name = f"{directory.parent.name}/{name}"
        named[name] = directory
    check_prediction_dirs(directories)
    report_dir = Path(report_dir) if report_dir is not None else directories[0] / "report"
    state = distributed_state()
    with hold_output_dir(report_dir, state):  # a failed start (e.g. the data) leaves no report directory
        if dataset is None:
            dataset = load_split(dataset_name, data_root, split, **(dataset_kwargs or {}))
        report = evaluate_predictions(
            dataset,
            named,
            report_dir,
            num_overlays=num_overlays,
            dataset_name=dataset_name,
            split=split,
            data_root=data_root,
        )
        page = write_report_page(report_dir, dataset, state) if report_html else None
    if state.is_main_process:
        print(format_report(report))
        print(f"Report in {report_dir}")
        if page:
            print(f"Every image and its masks, to look at: {page}")
    finish_distributed(state)
    return report
