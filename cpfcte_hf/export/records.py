# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What an export reads: a labelled output folder, its split, and which of its masks are complete and current.

`read_labelled_output(DIR)` checks that DIR is a labelled output (`cpfcte-hf label`'s folder, or stage 2's
`predictions/<split>/`) and that its records agree with each other: `summary.json` (counts, failures, settings,
classes, where the images were), `fingerprint.json` (what made the masks; its digest must match, and it must name the
settings and classes the summary names). `select_images` then sorts every image of the split into exported or left
out, with the reason, by the run's own accounting: failed when labelled, skipped by the loader, no mask, no record
of the image its mask was made from (`sources.json`), changed since (other bytes or tags), rejected in review
(`review.json`). `scan_masks` reads each exported mask once: its classes, and a value beyond the classes is an
error naming the file.

Every refusal is an `ExportError` (a `ValueError`) whose message names the file.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..evaluation.html_report.records import SUMMARY_FILE, NotARunDirectory, read_run_records
from ..evaluation.results import ResultsError, read_json
from ..models.cpfcte.metrics import IGNORE_INDEX
from ..models.cpfcte.visualization import exif_orientation, read_mask
from ..prediction.sources import ContentRecord, DatasetSources, ImageSource, keyed_content, same_content
from ..utils.fingerprint import FINGERPRINT_FILE, canonical_json, diff_fingerprints, fingerprint_digest
from ..utils.output_dir import HOLDER_FILE


# The kind each stage's fingerprint records (`pseudo_label_fingerprint`, `stage_two_fingerprint`).
FINGERPRINT_KINDS = {"pseudo_labels": "cpfcte_hf pseudo-labels", "stage2": "cpfcte_hf stage-2 predictions"}
# The set exported by default: the refined masks (what stage 2 trains on, what stage 2's evaluation reports).
DEFAULT_SETS = {"pseudo_labels": ("CRF", "BPM"), "stage2": ("MS+CRF", "MS")}
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
IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


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


# --------------------------------------------------------------------------------------------- the folder


def resolve_labels_dir(path: str | os.PathLike) -> Path:
    """`path` itself when it holds a `summary.json`; a stage-2 output folder with one `predictions/<split>/`: that
    folder (with several, an error naming them)."""
    directory = Path(path)
    if not directory.is_dir():
        raise ExportError(f"--labels {directory}: no such directory.")
    if (directory / SUMMARY_FILE).is_file():
        return directory
    predictions = sorted(p for p in (directory / "predictions").glob("*") if (p / SUMMARY_FILE).is_file())
    if len(predictions) == 1:
        return predictions[0]
    if predictions:
        raise ExportError(
            f"--labels {directory}: a stage-2 output with several prediction folders "
            f"({', '.join(str(p) for p in predictions)}); name one."
        )
    if (directory / HOLDER_FILE).is_file():
        raise ExportError(
            f"{directory / SUMMARY_FILE}: not found, and {directory / HOLDER_FILE} says a run is labelling the folder "
            "(or was stopped): its summary is written when it finishes; export it then."
        )
    raise ExportError(
        f"{directory / SUMMARY_FILE}: not found, so {directory} is not a labelled output (a `cpfcte-hf label` "
        "folder, or a stage-2 `predictions/<split>/` folder)."
    )


def _read_fingerprint_file(directory: Path) -> dict:
    """The fingerprint of `directory`, after checking its recorded digest (a hand-edited file is refused)."""
    path = directory / FINGERPRINT_FILE
    try:
        record = read_json(path, missing_ok=True)
    except ResultsError as error:
        raise ExportError(str(error)) from None
    if record is None:
        raise ExportError(f"{path}: not found; the folder does not say what made its masks.")
    fingerprint = record.get("fingerprint")
    if not isinstance(fingerprint, dict) or fingerprint_digest(fingerprint) != record.get("digest"):
        raise ExportError(f"{path}: not a fingerprint record, or its digest does not match its content.")
    return fingerprint


def _settings_the_summary_names(stage: str, summary: dict) -> dict:
    """The fingerprint fields that `summary.json`'s `config` and `class_names` determine, as the fingerprint
    records them (`pseudo_label_fingerprint`, `stage_two_fingerprint`)."""
    config = summary.get("config") or {}
    named = {"id2label": {str(i): str(name) for i, name in enumerate(summary.get("class_names") or [])}}
    named["scales"] = [float(s) for s in config.get("scales", [])]
    named["flip"] = bool(config.get("flip"))
    named["crf"] = config.get("crf_config") if config.get("crf") else None
    if stage == "pseudo_labels":
        named["size"] = config.get("size")
        named["crf_max_side"] = int(config.get("crf_max_side") or 0)
    return named


def read_labelled_output(
    path: str | os.PathLike,
    mask_set: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
) -> LabelledOutput:
    """
    Reads and checks a labelled output folder (see the module docstring). `mask_set`: a prediction set's name or
    folder (`CRF` / `crf`, `BPM`, `MS+CRF`, `MS`); default the refined one. `dataset`, `data_root`, `split`: what
    the run recorded unless given.

    Raises:
        ExportError: not a labelled output, records that disagree or are unreadable, an unknown mask set.
    """
    directory = resolve_labels_dir(path)
    summary_path = directory / SUMMARY_FILE
    try:
        records = read_run_records(directory)
    except (NotARunDirectory, ResultsError, ValueError) as error:
        raise ExportError(str(error)) from None
    summary = records.summary or {}
    stage = summary.get("stage", "pseudo_labels")
    if stage not in FINGERPRINT_KINDS:
        raise ExportError(
            f"{summary_path}: stage {stage!r} is not a labelling stage ({', '.join(FINGERPRINT_KINDS)})."
        )
    for key in ("config", "class_names", "failures"):
        if key not in summary:
            raise ExportError(f"{summary_path}: no {key!r}; not the summary of a finished labelling run.")
    fingerprint = _read_fingerprint_file(directory)
    if fingerprint.get("kind") != FINGERPRINT_KINDS[stage]:
        raise ExportError(
            f"{directory / FINGERPRINT_FILE}: made by {fingerprint.get('kind')!r}, but {summary_path} is of stage "
            f"{stage!r}: the folder mixes two runs."
        )
    named = _settings_the_summary_names(stage, summary)
    recorded = {key: fingerprint.get(key) for key in named}
    if canonical_json(named) != canonical_json(recorded):
        changes = "; ".join(diff_fingerprints(named, recorded)[:6])
        raise ExportError(
            f"{directory / FINGERPRINT_FILE}: the masks were made with other settings than {summary_path} says "
            f"({changes}); relabel the folder (the same command with --overwrite) before exporting it."
        )
    class_names = [str(name) for name in summary["class_names"]]
    sets = {name: Path(folder) for name, folder in records.sets.items()}
    mask_set = _choose_set(sets, mask_set, stage, directory)
    split = split or summary.get("split")
    if not split:
        raise ExportError(f"{summary_path}: the run recorded no split name; pass --split.")
    return LabelledOutput(
        directory=directory,
        stage=stage,
        mask_set=mask_set,
        mask_dir=sets[mask_set],
        class_names=class_names,
        dataset=dataset or summary.get("dataset"),
        data_root=data_root if data_root is not None else _recorded_data_root(summary, records.metrics),
        split=str(split),
        summary=summary,
        fingerprint=fingerprint,
        metrics=records.metrics,
    )


def _recorded_data_root(summary: dict, metrics: dict | None) -> str | None:
    """Where the images were: the summary's `data_root` (recorded since the export exists), else the report's."""
    if "data_root" in summary:
        return summary["data_root"]
    return (metrics or {}).get("data_root")


def _choose_set(sets: dict[str, Path], wanted: str | None, stage: str, directory: Path) -> str:
    available = {name: folder for name, folder in sets.items() if folder.is_dir()}
    if wanted is None:
        for name in DEFAULT_SETS[stage]:
            if name in available:
                return name
        raise ExportError(f"{directory}: none of its mask folders ({', '.join(map(str, sets.values()))}) exists.")
    for name, folder in sets.items():
        if wanted in (name, folder.name) or wanted.lower() == name.lower():
            if name not in available:
                raise ExportError(f"--mask_set {wanted}: {folder} does not exist.")
            return name
    raise ExportError(f"--mask_set {wanted}: {directory} has the sets {', '.join(sets)}.")


# ------------------------------------------------------------------------------------------- the selection


def load_labelled_split(labelled: LabelledOutput, options: dict | None = None):
    """
    The split the masks were made from, loaded as the labelling run loaded it (`cpfcte_hf.data`): the recorded (or
    given) dataset, data root and split, with the loader `options` (`--dataset_option`). A folder of own photos is
    read with the run's class names, its output folders left out of the untagged files.

    Raises:
        ExportError: no dataset recorded or given; the loader's own error (missing folder, split file, tags).
    """
    from ..data import check_dataset, load_split

    if not labelled.dataset:
        raise ExportError(f"{labelled.directory / SUMMARY_FILE}: the run recorded no dataset; pass --dataset.")
    options = dict(options or {})
    if labelled.dataset == "tagged":
        options.setdefault("class_names", labelled.class_names)
        options.setdefault("exclude", [labelled.directory])
    try:
        check_dataset(labelled.dataset, labelled.data_root, labelled.split, **options)
        dataset = load_split(labelled.dataset, labelled.data_root, labelled.split, **options)
    except (OSError, ValueError) as error:
        raise ExportError(
            f"The split of {labelled.directory} ({labelled.dataset}, {labelled.split}): {error}"
        ) from None
    if not hasattr(dataset, "column_names") or "image" not in dataset.column_names or "id" not in dataset.column_names:
        raise ExportError(f"The split of {labelled.directory} has no `image` and `id` columns.")
    return dataset


def _current_inputs(labelled: LabelledOutput, dataset, ids: Sequence[str]) -> dict | None:
    """The per-image inputs a stage-1 mask depends on besides its image (the tags, as model class ids), as the
    labelling job recorded them in `sources.json`; `None` when it recorded none (no label masking, stage 2)."""
    if labelled.stage != "pseudo_labels" or not labelled.fingerprint.get("use_image_labels"):
        return None
    from ..models.cpfcte.class_names import dataset_class_names, map_class_names
    from ..prediction.pseudo_labels import _image_labels

    try:
        mapping = map_class_names(dataset_class_names(dataset, labelled.id2label), labelled.class_names)
    except ValueError as error:
        raise ExportError(
            f"The split's classes do not fit the classes of {labelled.directory / SUMMARY_FILE}: {error}"
        ) from None
    return _image_labels(dataset, mapping, ids, True)


def select_images(labelled: LabelledOutput, dataset, rejected: set[str] = frozenset()) -> Selection:
    """
    Sorts every image of `dataset` (the split as loaded now) into exported or left out, by the labelling run's
    accounting: failed when labelled, no mask, no record of the image its mask was made from, changed since (the
    image's bytes or its tags differ from `sources.json`'s record), or in `rejected`. Images the loader skips now or
    skipped when labelling are listed as skipped by the loader.
    """
    from ..data import loader_report

    ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]
    failures = {str(f.get("id")): f for f in labelled.summary.get("failures", [])}
    recorded = ContentRecord(labelled.directory).load()
    inputs = _current_inputs(labelled, dataset, ids)
    sources = DatasetSources(dataset)
    images, left_out = [], []

    def leave_out(image_id: str, reason: str, detail: str = "") -> None:
        left_out.append({"id": image_id, "reason": reason, "detail": detail})

    for index, image_id in enumerate(ids):
        mask_path = labelled.mask_dir / f"{image_id}.png"
        if image_id in failures:
            failure = failures[image_id]
            leave_out(image_id, "failed", f"{failure.get('stage')}: {failure.get('error')}")
            continue
        if not mask_path.is_file():
            leave_out(image_id, "no_mask", str(mask_path))
            continue
        if image_id not in recorded:
            leave_out(image_id, "not_recorded")
            continue
        try:
            source = sources(index)
            key = keyed_content(source, None if inputs is None else inputs.get(image_id), recorded[image_id])
        except (OSError, ValueError) as error:
            leave_out(image_id, "changed", f"cannot be read now: {error}")
            continue
        if not same_content(key, recorded[image_id]):
            leave_out(image_id, "changed")
            continue
        if image_id in rejected:
            leave_out(image_id, "rejected")
            continue
        images.append(ExportImage(image_id, index, source, mask_path))
    present = set(ids)
    skipped = {str(s.get("id")): s for s in labelled.summary.get("skipped", [])}
    skipped.update({str(s.get("id")): s for s in loader_report(dataset)["skipped"]})
    for image_id, entry in skipped.items():
        if image_id not in present:
            leave_out(image_id, "skipped_by_loader", str(entry.get("reason", "")))
    return Selection(labelled, images, left_out)


# ------------------------------------------------------------------------------------------------ the masks


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: an EXIF rotation by 90 degrees swaps them (as `datasets.Image` decodes)."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def scan_masks(selection: Selection, progress=None) -> Selection:
    """
    Reads every exported mask once: its classes (`ExportImage.classes`), the image's size and format. A mask whose
    size differs from its image's is left out (counted); a value that is no class id and not 255 (ignore) is an
    `ExportError` naming the mask file and the class list. `progress`: a tqdm bar updated per image.
    """
    labelled, kept = selection.labelled, []
    for item in selection.images:
        try:
            mask = read_mask(item.mask_path)
        except (OSError, ValueError) as error:
            raise ExportError(f"{item.mask_path}: not a readable mask ({error}).") from None
        values = np.unique(mask)
        beyond = [int(v) for v in values if v >= labelled.num_classes and v != IGNORE_INDEX]
        if beyond:
            raise ExportError(
                f"{item.mask_path}: value {beyond[0]} is beyond the {labelled.num_classes} classes of "
                f"{labelled.directory / SUMMARY_FILE} (ids 0-{labelled.num_classes - 1}, 255 = ignore): the class "
                "list disagrees with the masks."
            )
        with Image.open(item.source.path or io.BytesIO(item.image_bytes())) as image:
            item.width, item.height = _displayed_size(image)
            # The image's own extension when it is a file, else its format's: the COCO export copies its bytes.
            suffix = Path(item.source.path).suffix.lower() if item.source.path else ""
            item.extension = suffix or IMAGE_EXTENSIONS.get(image.format or "", ".png")
        if (item.height, item.width) != mask.shape:
            selection.left_out.append(
                {
                    "id": item.id,
                    "reason": "size_mismatch",
                    "detail": f"image {item.width}x{item.height}, mask {mask.shape[1]}x{mask.shape[0]}",
                }
            )
        else:
            item.classes = [int(v) for v in values if v != IGNORE_INDEX]
            kept.append(item)
        if progress is not None:
            progress.update(1)
    selection.images = kept
    return selection


__all__ = [
    "LEFT_OUT_REASONS",
    "ExportError",
    "ExportImage",
    "LabelledOutput",
    "Selection",
    "read_labelled_output",
    "resolve_labels_dir",
    "scan_masks",
    "load_labelled_split",
    "select_images",
]
