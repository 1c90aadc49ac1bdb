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

import os
from pathlib import Path

from ..evaluation.html_report.records import SUMMARY_FILE, NotARunDirectory, read_run_records
from ..evaluation.results import ResultsError, read_json
from ..utils.fingerprint import FINGERPRINT_FILE, canonical_json, diff_fingerprints, fingerprint_digest
from ..utils.output_dir import HOLDER_FILE
from .labelled import LEFT_OUT_REASONS, ExportError, ExportImage, LabelledOutput, Selection
from .selection import IMAGE_EXTENSIONS, load_labelled_split, scan_masks, select_images  # noqa: F401


# The kind each stage's fingerprint records (`pseudo_label_fingerprint`, `stage_two_fingerprint`).
FINGERPRINT_KINDS = {"pseudo_labels": "cpfcte_hf pseudo-labels", "stage2": "cpfcte_hf stage-2 predictions"}
# The set exported by default: the refined masks (what stage 2 trains on, what stage 2's evaluation reports).
DEFAULT_SETS = {"pseudo_labels": ("CRF", "BPM"), "stage2": ("MS+CRF", "MS")}


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
    stage = _labelling_stage(summary, summary_path)
    fingerprint = _read_fingerprint_file(directory)
    _check_fingerprint_agrees(fingerprint, stage, summary, summary_path)
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


def _labelling_stage(summary: dict, summary_path: Path) -> str:
    """The stage of a finished labelling run's `summary.json`; `ExportError` for any other summary."""
    stage = summary.get("stage", "pseudo_labels")
    if stage not in FINGERPRINT_KINDS:
        raise ExportError(
            f"{summary_path}: stage {stage!r} is not a labelling stage ({', '.join(FINGERPRINT_KINDS)})."
        )
    for key in ("config", "class_names", "failures"):
        if key not in summary:
            raise ExportError(f"{summary_path}: no {key!r}; not the summary of a finished labelling run.")
    return stage


def _check_fingerprint_agrees(fingerprint: dict, stage: str, summary: dict, summary_path: Path) -> None:
    """`ExportError` unless the fingerprint is of the summary's stage and records the settings the summary names."""
    fingerprint_path = summary_path.parent / FINGERPRINT_FILE
    if fingerprint.get("kind") != FINGERPRINT_KINDS[stage]:
        raise ExportError(
            f"{fingerprint_path}: made by {fingerprint.get('kind')!r}, but {summary_path} is of stage "
            f"{stage!r}: the folder mixes two runs."
        )
    named = _settings_the_summary_names(stage, summary)
    recorded = {key: fingerprint.get(key) for key in named}
    if canonical_json(named) != canonical_json(recorded):
        changes = "; ".join(diff_fingerprints(named, recorded)[:6])
        raise ExportError(
            f"{fingerprint_path}: the masks were made with other settings than {summary_path} says "
            f"({changes}); relabel the folder (the same command with --overwrite) before exporting it."
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
