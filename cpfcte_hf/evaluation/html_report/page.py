# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The report's page model: what a run did and how good its masks are, built from the run's own records.

`build_report_page` takes what `records.read_run_records` read from the run's folder and the split itself (photos,
tags, ground truth: the dataset the run was made from), draws the thumbnails (`thumbnails.ThumbnailWriter`) and
returns a `ReportPage`: settings, accounting, per-class IoU and one `ReportRow` per image. `render.render_report_page`
turns it into HTML.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from ...models.cpfcte.class_names import dataset_class_names, map_class_names, mapping_is_identity
from ...models.cpfcte.metrics import IGNORE_INDEX
from ...models.cpfcte.visualization import voc_palette
from .records import RunRecords
from .thumbnails import RelativeURLs, ThumbnailWriter, thumbnail_key


STAGE_TITLES = {
    "pseudo_labels": "Pseudo-labels (stage 1)",
    "stage2": "Stage-2 predictions",
    "evaluation": "Evaluation",
}
# Settings the page leaves out: long lists that the per-class table already shows, or that say nothing to a reader.
HIDDEN_SETTINGS = {"kind", "id2label", "dataset_class_names", "class_mapping", "progress", "overwrite"}
MAX_LISTED = 200  # failures / skipped images listed at the top (all of them are in the grid)
MAX_SCORES = 6  # image-level scores shown per image


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


class RowMaker:
    """Makes the grid's row of each image of a run (drawing its thumbnails on the way)."""

    def __init__(self, records: RunRecords, dataset, class_names: Sequence[str]):
        self.records = records
        self.num_labels = len(class_names)
        try:  # dataset classes -> the report's (the model's) by name, as the run itself mapped them
            self.mapping = map_class_names(dataset_class_names(dataset, fallback=class_names), class_names)
        except ValueError:
            self.mapping = None
        lookup = None
        if self.mapping is not None and not mapping_is_identity(self.mapping):
            lookup = np.full(256, IGNORE_INDEX, np.uint8)
            lookup[: len(self.mapping)] = self.mapping
            lookup[IGNORE_INDEX] = IGNORE_INDEX
        self.has_gt = "mask" in dataset.column_names
        self.panels = ["photo", *(["ground truth"] if self.has_gt else []), *records.sets]
        self.per_image = (records.per_image or {}).get("images") or {}
        self.reasons = _failure_reasons(records)
        self.writer = ThumbnailWriter(records.directory, self.num_labels, lookup)
        self.relative_url = RelativeURLs(records.directory)
        self.folders = {name: os.fspath(folder) for name, folder in records.sets.items()}
        self.last_set = list(records.sets)[-1] if records.sets else None

    def __call__(self, index: int, item: dict) -> ReportRow:
        """The row of dataset row `index` (`item`: its `id`, undecoded `image` / `mask`, `labels`)."""
        image_id = str(item["id"])
        labels = item.get("labels") or []
        if self.mapping is not None:
            labels = [self.mapping[c] for c in labels if 0 <= c < len(self.mapping)]
        tags = sorted({int(c) for c in labels} - {0})
        masks = {name: os.path.join(folder, f"{image_id}.png") for name, folder in self.folders.items()}
        pictures = self.writer.draw(item.get("image"), item.get("mask") if self.has_gt else None, masks)
        entry = self.per_image.get(image_id) or {}
        scores, tag_score = _class_scores(self.records.image_scores.get(image_id), tags)
        classes = set(tags) | set(entry.get("gt_classes") or []) | set(pictures.classes.get(self.last_set, []))
        if not entry:  # not scored: the classes of the ground truth as drawn
            classes |= set(pictures.classes.get("ground truth", []))
        status, reason = "ok", None
        if image_id in self.reasons:
            status, reason = "failed", "; ".join(self.reasons[image_id])
        elif pictures.missing:
            status = "missing"
            reason = "no mask in " + ", ".join(str(self.records.sets[name]) for name in pictures.missing)
        links = [self.relative_url(pictures.photo_file) if pictures.photo_file else None, *[None] * self.has_gt]
        links += [None if name in pictures.missing else self.relative_url(path) for name, path in masks.items()]
        return ReportRow(
            index=index,
            id=image_id,
            status=status,
            reason=reason,
            note="; ".join(pictures.errors) if pictures.errors and status == "ok" else None,
            tags=tags,
            classes=sorted(c for c in classes if 0 < c < self.num_labels),
            scores=scores,
            tag_score=tag_score,
            miou={name: value for name, value in (entry.get("mean_iou") or {}).items() if name in self.records.sets},
            thumbnails=pictures.thumbnails,
            links=links,
            size=list(pictures.size) if pictures.size else None,
        )


def _image_rows(make_row: RowMaker, dataset, state, progress: bool, workers: int | None) -> list[ReportRow] | None:
    """The rows of every image of `dataset`: each process makes its share (images `rank`, `rank + world`, ...:
    `shard_indices`) in a pool of threads; the main process gets them all, in the dataset's order, and keeps the
    thumbnails they use."""
    from ...utils.distributed import shard_indices
    from ...utils.progress import progress_bar

    indices = list(shard_indices(len(dataset), state))
    workers = workers or max(1, min(8, (os.cpu_count() or 1) // state.num_processes))
    bar = progress_bar(len(indices), 0, enabled=progress and state.is_main_process, desc="report")
    rows: list[ReportRow] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk in _chunks(zip(indices, _dataset_rows(dataset, indices)), 4 * workers):
            rows += pool.map(lambda pair: make_row(*pair), chunk)
            bar.update(len(chunk))
    bar.close()
    writer = make_row.writer
    used = [name for row in rows for name in row.thumbnails if name]
    keys = {thumbnail_key(name) for name in used}
    cache = {key: value for key, value in writer.cache.items() if key in keys}
    from accelerate.utils import gather_object

    gathered = gather_object([(rows, used, cache)])  # a process alone gets its own back
    if not state.is_main_process:
        return None
    rows = sorted((row for part, _, _ in gathered for row in part), key=lambda row: row.index)
    used = [name for _, part, _ in gathered for name in part]
    for _, _, part in gathered:
        writer.cache.update(part)
    writer.finish(used)
    return rows


def _problem_rows(summary: dict, start: int) -> list[ReportRow]:
    """Rows of the files the loader skipped or that had no tags row: not in the dataset, listed with their reason."""
    rows = [
        ReportRow(start + k, str(item.get("id")), "skipped", f"skipped by the loader: {item.get('reason')}")
        for k, item in enumerate(summary.get("skipped", []))
    ]
    untagged = "untagged: the tags file has no row for this file"
    rows += [
        ReportRow(start + len(rows) + k, str(name), "skipped", untagged)
        for k, name in enumerate(summary.get("untagged", []))
    ]
    return rows


def build_report_page(
    records: RunRecords,
    dataset,
    state=None,
    progress: bool = False,
    workers: int | None = None,
) -> ReportPage | None:
    """
    The page of a run: its settings, accounting and per-class scores from `records`, and one row per image of
    `dataset` (the split the run was made from: `image`, `id`, optional `labels` and `mask`), plus one per file the
    loader skipped or left untagged, each with its reason. Thumbnails are drawn on the way (each process of a
    distributed run draws its share; `state`: `distributed_state()`, the default).

    Returns:
        The page on the main process, `None` on the others.
    """
    from ...utils.distributed import distributed_state

    state = state if state is not None else distributed_state()
    names = list(records.class_names) or dataset_class_names(dataset)
    make_row = RowMaker(records, dataset, names)
    rows = _image_rows(make_row, dataset, state, progress, workers)
    if rows is None:
        return None
    summary, metrics = records.summary or {}, records.metrics or {}
    rows += _problem_rows(summary, len(rows))
    for row in rows:
        row.thumbnails += [None] * (len(make_row.panels) - len(row.thumbnails))
        row.links += [None] * (len(make_row.panels) - len(row.links))
    per_class, mean_iou = _per_class(records.metrics, names)
    failures = [(row.id, row.reason or "") for row in rows if row.status in ("failed", "missing")]
    skipped = [(row.id, row.reason or "") for row in rows if row.status == "skipped"]
    where = (summary.get("dataset") or metrics.get("dataset"), summary.get("split") or metrics.get("split"))
    palette = voc_palette()
    return ReportPage(
        title=" · ".join(str(v) for v in (STAGE_TITLES.get(records.stage, records.stage), *where) if v),
        stage=records.stage,
        directory=str(records.directory),
        created=datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        class_names=[str(name) for name in names],
        class_colors=["#" + bytes(int(v) for v in palette[i]).hex() for i in range(len(names))],
        panels=make_row.panels,
        sets=list(records.sets),
        settings=_settings(records),
        counts=_counts(records, len(rows)),
        failures=failures[:MAX_LISTED],
        skipped=skipped[:MAX_LISTED],
        per_class=per_class,
        mean_iou={name: (None if value is None or math.isnan(value) else value) for name, value in mean_iou.items()},
        rows=rows,
        has_ground_truth=make_row.has_gt and bool(make_row.per_image),
        has_scores=bool(records.image_scores),
        num_failures=len(failures),
        num_skipped=len(skipped),
    )


__all__ = ["ReportPage", "ReportRow", "RowMaker", "build_report_page"]
