# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The numbers a model card may show: each measurement the card lists (`model_cards/cards.yaml`) found in the results
files the project wrote (`collect_measurements`), with the dataset, split and file it came from; a value no results
file gives is "not measured".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..evaluation.results import PREDICTION_SET_STAGES, Results, find_results, read_results


CARDS_DIR = Path(__file__).resolve().parents[1] / "model_cards"  # the top-level `model_cards/` (linked)
CARD_TEMPLATE = CARDS_DIR / "template.md"
_CARDS = yaml.safe_load((CARDS_DIR / "cards.yaml").read_text(encoding="utf-8"))
# The stage-1 training records written to the Hub folder: path in the folder -> attribute of `HubFolder`.
TRAINING_RECORDS = {"training/run_config.json": "run_config", "training/trainer_state.json": "trainer_state"}


class HubSharingError(ValueError):
    """A bad input to the sharing step: model directory, card template, results file, repo id, output folder."""


class HubPushError(RuntimeError):
    """The push itself could not happen: offline mode, no token, the Hub unreachable or refusing."""


_SPECS = _CARDS["measurements"]  # key -> stage, prediction set, description, metric name, short name, optional


# The values every card lists, "not measured" when no results file gives them; an optional one shows when measured.
MEASUREMENTS = {key: spec["description"] for key, spec in _SPECS.items() if not spec.get("optional")}


_BY_SET = {(spec["stage"], spec["set"]): key for key, spec in _SPECS.items()}


NOT_MEASURED = "not measured"


RESULTS_FILE = "results.json"


@dataclass
class Measurement:
    """One mIoU of a results file: a key of `cards.yaml`'s measurements, value in [0, 1], where it was measured."""

    key: str
    mean_iou: float
    results: Results
    per_class: dict[str, float | None]
    repo_path: str | None = None  # where the results file lies in the Hub folder, once copied

    source = property(lambda self: self.results.path)
    dataset = property(lambda self: self.results.dataset)
    split = property(lambda self: self.results.split)

    @property
    def percent(self) -> float:
        """The mIoU in %, rounded to 2 decimals: the value on the card and in its `model-index`."""
        return round(100.0 * self.mean_iou, 2)


def _card_key(results: Results, name: str) -> str | None:
    """The measurement of prediction set `name` of `results`, None if the card does not show it. `evaluate` names
    sets after folders (bpm, ms_crf); pseudo-labels made without the tags and a single-scale stage 2 are
    measurements of their own, told apart by the settings the file records."""
    name = str(name).upper().replace("_", "+")
    stage = PREDICTION_SET_STAGES.get(name.lower()) if results.stage == "evaluation" else results.stage
    if stage == "pseudo_labels" and results.settings.get("use_image_labels") is False:
        name = f"UNTAGGED {name}"
    if stage == "stage2" and len(results.settings.get("scales") or ()) == 1:
        name = name.replace("MS", "SS")
    return _BY_SET.get((stage, name))


def collect_measurements(
    sources: Sequence[str | os.PathLike], class_names: Sequence[str]
) -> tuple[dict[str, Measurement], list[str], list[Results]]:
    """
    Reads every results source (`results.find_results`) into `{key: Measurement}` (`key@split` for a second split
    of one value), notes on what was skipped, and the results files read.

    Raises:
        ResultsError: an unknown or unreadable file, or results of other classes.
        HubSharingError: two files give one value on one split, or no file gives any value the card knows.
    """
    paths = {}  # the first spelling of each file
    for path in (path for source in sources for path in find_results(source)):
        paths.setdefault(path.resolve(), path)
    measurements, notes, read = {}, [], [read_results(path, class_names) for path in paths.values()]
    for results in read:
        for name in results.predictions:
            key, value = _card_key(results, name), results.mean_iou(name)
            if key is None or value is None:
                why = "has no mIoU (nothing was scored)" if key else "is no value the card shows"
                notes.append(f"{results.path}: {results.stage} prediction set {name!r} {why}; not on the card.")
                continue
            slot = key if key not in measurements or results.split in (None, measurements[key].split) else None
            slot = slot or f"{key}@{results.split}"
            if slot in measurements:
                raise HubSharingError(
                    f"Two results files give {key} on the same split: {measurements[slot].source} and "
                    f"{results.path}. Pass only the one the card should show."
                )
            measurements[slot] = Measurement(key, value, results, results.per_class_iou(name))
    if not measurements and read:
        raise HubSharingError(f"No value the card knows in {', '.join(str(r.path) for r in read)}: {notes}")
    return measurements, notes, read


def _number(value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _cell(value) -> str:
    return "–" if value in (None, "") else str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def results_table(measurements: Mapping[str, Measurement]) -> str:
    """Every value the card knows, "not measured" where no results file gave it (an optional one only if given)."""
    rows = []
    for key, spec in _SPECS.items():
        found = [m for m in measurements.values() if m.key == key]
        if not found and not spec.get("optional"):
            rows.append((spec["description"], None, None, None, NOT_MEASURED, None))
        for m in found:
            source = f"[`{m.repo_path}`]({m.repo_path})" if m.repo_path else f"`{m.source.name}`"
            rows.append((spec["description"], m.dataset, m.split, m.results.num_images, f"{m.percent:.2f}", source))
    return _table(("Measurement", "Dataset", "Split", "Images", "mIoU (%)", "Read from"), rows)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100.0 * value:.2f}"


def per_class_table(measurements: Mapping[str, Measurement], class_names: Sequence[str]) -> str:
    """Per-class IoU (%) of every measurement that has it."""
    columns = [m for key in _SPECS for m in measurements.values() if m.key == key and m.per_class]
    if not columns:
        return f"Per-class IoU: {NOT_MEASURED}."
    header = ["Class", *[f"{_SPECS[m.key]['short']} ({_cell(m.split)})" for m in columns]]
    rows = [(name, *[_percent(m.per_class.get(name)) for m in columns]) for name in class_names]
    return _table(header, [*rows, ("**mIoU**", *[f"**{m.percent:.2f}**" for m in columns])])
