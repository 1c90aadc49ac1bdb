# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The report's page model: what a run did and how good its masks are, built from the run's own records.

A run's folder is read as it is on disk (`read_run_records`), so that a report can be rebuilt, or reviewed, long after
the run:

- a prediction job's folder (`cpfcte-hf label`, stage 2's `predict_split`): `summary.json` (counts, failures with
  reasons, images the loader skipped, the prediction sets), `fingerprint.json` (the settings that made the masks),
  the masks, `image_scores.jsonl` (stage 1's image-level scores, `cpfcte_hf.image_records`) and, with ground truth,
  `report/metrics.json` and `report/per_image.json`;
- an evaluation's report folder (`cpfcte-hf evaluate`): `metrics.json` (it names the prediction folders) and
  `per_image.json`.

`build_report_page` adds the split itself (photos, tags, ground truth; the dataset the run was made from) and draws
the thumbnails (`thumbnails.ThumbnailWriter`); `render.render_report_page` turns the `ReportPage` into HTML.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..class_names import dataset_class_names, map_class_names, mapping_is_identity
from ..fingerprint import read_fingerprint
from ..image_records import read_image_scores, read_per_image
from ..metrics import IGNORE_INDEX
from ..results import read_json
from ..visualization import voc_palette
from .thumbnails import RelativeURLs, ThumbnailWriter, thumbnail_key


SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.json"
REPORT_SUBDIR = "report"
STAGE_TITLES = {
    "pseudo_labels": "Pseudo-labels (stage 1)",
    "stage2": "Stage-2 predictions",
    "evaluation": "Evaluation",
}
# Prediction sets of summaries written before `prediction_sets` was recorded.
LEGACY_SETS = {"pseudo_labels": {"BPM": "bpm", "CRF": "crf"}, "stage2": {"MS": "ms", "MS+CRF": "ms_crf"}}
# Settings the page leaves out: long lists that the per-class table already shows, or that say nothing to a reader.
HIDDEN_SETTINGS = {"kind", "id2label", "dataset_class_names", "class_mapping", "progress", "overwrite"}
MAX_LISTED = 200  # failures / skipped images listed at the top (all of them are in the grid)
MAX_SCORES = 6  # image-level scores shown per image


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


# ---------------------------------------------------------------------------------------------------- page model


@dataclass
class ReportRow:
    """One image of the grid."""

    index: int
    id: str
    status: str  # "ok", "failed" (the run could not make or score its mask), "missing" (no mask), "skipped"
    reason: str | None = None
    note: str | None = None  # a thumbnail that could not be drawn
    tags: list[int] = field(default_factory=list)  # the image-level labels (foreground class ids)
    classes: list[int] = field(default_factory=list)  # tagged, in the ground truth, or in the last mask
    scores: list[list] = field(default_factory=list)  # [[class id, image-level score], ...], highest first
    tag_score: float | None = None  # the lowest score of a tagged class (the highest class score without tags)
    miou: dict[str, float | None] = field(default_factory=dict)  # per prediction set, with ground truth
    thumbnails: list[str | None] = field(default_factory=list)  # one per `ReportPage.panels`
    links: list[str | None] = field(default_factory=list)  # the full-size file of each panel
    size: list[int] | None = None  # (width, height) of the thumbnails

    def to_json(self) -> dict:
        """The row as the page's script reads it: empty fields left out."""
        return {key: value for key, value in vars(self).items() if value is not None and value != [] and value != {}}


@dataclass
class ReportPage:
    """Everything `render.render_report_page` draws."""

    title: str
    stage: str
    directory: str
    created: str
    class_names: list[str]
    class_colors: list[str]
    panels: list[str]
    sets: list[str]
    settings: list[tuple[str, str]]
    counts: list[tuple[str, int | float | str]]
    failures: list[tuple[str, str]]
    skipped: list[tuple[str, str]]
    per_class: list[dict] | None
    mean_iou: dict[str, float | None]
    rows: list[ReportRow]
    has_ground_truth: bool = False
    has_scores: bool = False
    num_failures: int = 0
    num_skipped: int = 0


def _flatten(value, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if str(key) not in HIDDEN_SETTINGS:
                yield from _flatten(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)):
        yield prefix[:-1], ", ".join(str(item) for item in value)
    elif value is not None:
        yield prefix[:-1], str(value)


def _settings(records: RunRecords) -> list[tuple[str, str]]:
    summary, metrics = records.summary or {}, records.metrics or {}
    facts = {
        "model": summary.get("model") or metrics.get("model"),
        "dataset": summary.get("dataset") or metrics.get("dataset"),
        "split": summary.get("split") or metrics.get("split"),
        "data_root": metrics.get("data_root"),
        "command": metrics.get("command") if records.stage == "evaluation" else None,
        "processes": summary.get("num_processes"),
    }
    if records.stage == "evaluation":
        facts["predictions"] = {name: str(path) for name, path in records.sets.items()}
        facts["ignore_index"] = metrics.get("ignore_index")
    rows = list(_flatten({key: value for key, value in facts.items() if value is not None}))
    if records.fingerprint:
        rows += list(_flatten(records.fingerprint))
    return rows


def _counts(records: RunRecords, num_rows: int) -> list[tuple[str, int | float | str]]:
    summary = records.summary
    if summary is not None:
        counts = [("images", summary.get("total", num_rows)), ("written", summary.get("written", 0))]
        counts.append(("already done", summary.get("already_done", 0)))
        if "changed" in summary:  # recorded by runs that check an image's content on resume
            counts.append(("changed", summary["changed"]))
        counts.append(("failed", summary.get("failed", len(summary.get("failures", [])))))
        counts.append(("skipped by the loader", len(summary.get("skipped", []))))
        if summary.get("untagged"):
            counts.append(("untagged (not labelled)", len(summary["untagged"])))
        if summary.get("seconds") is not None:
            counts.append(("seconds", summary["seconds"]))
        return counts
    metrics = records.metrics or {}
    counts = [("images", metrics.get("num_images", num_rows))]
    for name, entry in metrics.get("predictions", {}).items():
        counts += [
            (f"{name}: scored", entry.get("num_scored", 0)),
            (f"{name}: missing", entry.get("num_missing", 0)),
            (f"{name}: failed", entry.get("num_failed", 0)),
        ]
    counts.append(("ground truth unreadable", len(metrics.get("ground_truth_unreadable") or [])))
    return counts


def _per_class(metrics: dict | None, class_names: Sequence[str]) -> tuple[list[dict] | None, dict]:
    if not metrics or not metrics.get("predictions"):
        return None, {}
    sets = list(metrics["predictions"])
    first = metrics["predictions"][sets[0]].get("per_class") or []
    table = []
    for class_id, name in enumerate(class_names):
        row = {"class_id": class_id, "class_name": name, "gt_pixels": None, "iou": {}}
        if class_id < len(first):
            row["gt_pixels"] = first[class_id].get("gt_pixels")
        for set_name in sets:
            per_class = metrics["predictions"][set_name].get("per_class") or []
            row["iou"][set_name] = per_class[class_id].get("iou") if class_id < len(per_class) else None
        table.append(row)
    return table, {name: metrics["predictions"][name].get("mean_iou") for name in sets}


def _failure_reasons(records: RunRecords) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = defaultdict(list)
    for failure in (records.summary or {}).get("failures", []):
        reasons[str(failure["id"])].append(f"{failure.get('stage', 'failed')}: {failure.get('error', '')}")
    for entry in (records.metrics or {}).get("ground_truth_unreadable") or []:
        reasons[str(entry["id"])].append(f"ground truth: {entry.get('error', '')}")
    for image_id, entry in ((records.per_image or {}).get("images") or {}).items():
        for set_name, error in (entry.get("errors") or {}).items():
            reasons[image_id].append(f"{set_name}: {error}")
    return reasons


def _dataset_rows(dataset, indices: Sequence[int], batch_size: int = 64) -> Iterator[dict]:
    """The rows `indices` of `dataset` with `image` / `mask` undecoded (`{"bytes", "path"}`) where they are
    `datasets.Image` columns: the thumbnails open them, and a file on disk is known by its path."""
    import datasets

    columns = [c for c in ("id", "image", "mask", "labels") if c in dataset.column_names]
    view = dataset.select_columns(columns)
    for column in ("image", "mask"):
        if column in columns and isinstance(view.features[column], datasets.Image):
            view = view.cast_column(column, datasets.Image(decode=False))
    if len(indices) != len(view):
        view = view.select(indices)
    for batch in view.iter(batch_size=batch_size):
        for position in range(len(batch["id"])):
            yield {column: batch[column][position] for column in columns}


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _class_scores(scores: Sequence[float] | None, tags: Sequence[int]) -> tuple[list[list], float | None]:
    """The scores shown for an image (tagged classes, then the highest others) and its tag score."""
    if not scores:
        return [], None
    foreground = [t for t in tags if 0 < t < len(scores)]
    if foreground:
        tag_score = min(scores[t] for t in foreground)
    else:
        tag_score = max(scores[1:], default=None)
    order = sorted(range(1, len(scores)), key=lambda c: (c not in foreground, -scores[c]))
    shown = [c for c in order if c in foreground or scores[c] >= 0.1][:MAX_SCORES]
    return [[c, round(float(scores[c]), 3)] for c in shown], None if tag_score is None else round(float(tag_score), 4)


def build_report_page(
    records: RunRecords,
    dataset,
    state=None,
    progress: bool = False,
    workers: int | None = None,
) -> ReportPage | None:
    """
    The page of a run: its settings, accounting and per-class scores from `records`, and one row per image of
    `dataset` (the split the run was made from: `image`, `id`, optional `labels` and `mask`), plus one per image the
    loader skipped or left untagged, each with its reason. Thumbnails are drawn on the way (each process of a
    distributed run draws its share; `state` is `prediction.distributed_state()`).

    Returns:
        The page on the main process, `None` on the others.
    """
    from ..prediction import progress_bar

    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    names = list(records.class_names) or dataset_class_names(dataset)
    try:  # dataset classes -> the report's (the model's) by name, as the run itself mapped them
        mapping = map_class_names(dataset_class_names(dataset, fallback=names), names, source="the dataset")
    except ValueError:
        mapping = None
    lookup = None
    if mapping is not None and not mapping_is_identity(mapping):
        lookup = np.full(256, IGNORE_INDEX, np.uint8)
        lookup[: len(mapping)] = mapping
        lookup[IGNORE_INDEX] = IGNORE_INDEX
    has_gt = "mask" in dataset.column_names
    sets = list(records.sets)
    panels = ["photo", *(["ground truth"] if has_gt else []), *sets]
    per_image = (records.per_image or {}).get("images") or {}
    reasons = _failure_reasons(records)
    writer = ThumbnailWriter(records.directory, len(names), lookup)
    relative_url = RelativeURLs(records.directory)
    folders = {name: os.fspath(folder) for name, folder in records.sets.items()}
    last_set = sets[-1] if sets else None

    def make_row(index: int, item: dict) -> ReportRow:
        image_id = str(item["id"])
        labels = item.get("labels") or []
        if mapping is not None:
            labels = [mapping[c] for c in labels if 0 <= c < len(mapping)]
        tags = sorted({int(c) for c in labels} - {0})
        masks = {name: os.path.join(folder, f"{image_id}.png") for name, folder in folders.items()}
        pictures = writer.draw(item.get("image"), item.get("mask") if has_gt else None, masks)
        entry = per_image.get(image_id) or {}
        scores, tag_score = _class_scores(records.image_scores.get(image_id), tags)
        classes = set(tags) | set(entry.get("gt_classes") or [])
        if has_gt and "ground truth" in pictures.classes and not entry:
            classes |= set(pictures.classes["ground truth"])
        if last_set is not None:
            classes |= set(pictures.classes.get(last_set, []))
        missing = pictures.missing
        status, reason = "ok", None
        if image_id in reasons:
            status, reason = "failed", "; ".join(reasons[image_id])
        elif missing:
            status, reason = "missing", "no mask in " + ", ".join(str(records.sets[name]) for name in missing)
        links = [relative_url(pictures.photo_file) if pictures.photo_file else None, *[None] * has_gt]
        links += [None if name in missing else relative_url(path) for name, path in masks.items()]
        return ReportRow(
            index=index,
            id=image_id,
            status=status,
            reason=reason,
            note="; ".join(pictures.errors) if pictures.errors and status == "ok" else None,
            tags=tags,
            classes=sorted(c for c in classes if 0 < c < len(names)),
            scores=scores,
            tag_score=tag_score,
            miou={name: value for name, value in (entry.get("mean_iou") or {}).items() if name in records.sets},
            thumbnails=pictures.thumbnails,
            links=links,
            size=list(pictures.size) if pictures.size else None,
        )

    indices = list(range(rank, len(dataset), world))
    workers = workers or max(1, min(8, (os.cpu_count() or 1) // world))
    bar = progress_bar(len(indices), 0, enabled=progress and rank == 0, desc="report")
    rows: list[ReportRow] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk in _chunks(zip(indices, _dataset_rows(dataset, indices)), 4 * workers):
            rows += pool.map(lambda pair: make_row(*pair), chunk)
            bar.update(len(chunk))
    bar.close()
    used = [name for row in rows for name in row.thumbnails if name]
    keys = {thumbnail_key(name) for name in used}
    cache = {key: value for key, value in writer.cache.items() if key in keys}
    if state is not None and world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([(rows, used, cache)])
        if rank != 0:
            return None
        rows = sorted((row for part, _, _ in gathered for row in part), key=lambda row: row.index)
        used = [name for _, part, _ in gathered for name in part]
        for _, _, part in gathered:
            writer.cache.update(part)
    writer.finish(used)

    summary = records.summary or {}
    for skipped in summary.get("skipped", []):
        reason = f"skipped by the loader: {skipped.get('reason')}"
        rows.append(ReportRow(len(rows), str(skipped.get("id")), "skipped", reason))
    for name in summary.get("untagged", []):
        rows.append(ReportRow(len(rows), str(name), "skipped", "untagged: the tags file has no row for this file"))
    for row in rows:
        row.thumbnails += [None] * (len(panels) - len(row.thumbnails))
        row.links += [None] * (len(panels) - len(row.links))

    per_class, mean_iou = _per_class(records.metrics, names)
    failures = [(row.id, row.reason or "") for row in rows if row.status in ("failed", "missing")]
    skipped = [(row.id, row.reason or "") for row in rows if row.status == "skipped"]
    split = summary.get("split") or (records.metrics or {}).get("split")
    dataset_name = summary.get("dataset") or (records.metrics or {}).get("dataset")
    title = " · ".join(str(v) for v in (STAGE_TITLES.get(records.stage, records.stage), dataset_name, split) if v)
    palette = voc_palette()
    return ReportPage(
        title=title,
        stage=records.stage,
        directory=str(records.directory),
        created=datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        class_names=[str(name) for name in names],
        class_colors=["#" + bytes(int(v) for v in palette[i]).hex() for i in range(len(names))],
        panels=panels,
        sets=sets,
        settings=_settings(records),
        counts=_counts(records, len(rows)),
        failures=failures[:MAX_LISTED],
        skipped=skipped[:MAX_LISTED],
        per_class=per_class,
        mean_iou={name: (None if value is None or math.isnan(value) else value) for name, value in mean_iou.items()},
        rows=rows,
        has_ground_truth=has_gt and bool(per_image),
        has_scores=bool(records.image_scores),
        num_failures=len(failures),
        num_skipped=len(skipped),
    )


__all__ = ["NotARunDirectory", "ReportPage", "ReportRow", "RunRecords", "build_report_page", "read_run_records"]
