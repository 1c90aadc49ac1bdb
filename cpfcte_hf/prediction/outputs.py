# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The output folder of a pseudo-labelling run (`OutputLayout`: bpm/, crf/, report/, summary.json ...), its preparation,
and the run's accounting (`PseudoLabelSummary`: written, done, changed, failed, skipped; the exit status).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data._common import loader_report
from ..evaluation.html_report import REPORT_FILE, report_files
from ..evaluation.image_records import IMAGE_SCORES_FILE
from ..models.cpfcte.class_names import names_of
from ..utils.arguments import parse_key_values  # noqa: F401  (re-exported: scripts and stage 2 import it from here)
from ..utils.distributed import job_crf_workers
from ..utils.fingerprint import FINGERPRINT_FILE
from ..utils.io import atomic_write_text
from .job import (
    Failure,
    JobCounts,
)
from .job_dir import MASK_SETS
from .sources import SOURCES_FILE


@dataclass
class OutputLayout:
    """Where a run writes (see the module docstring)."""

    root: Path

    @property
    def bpm_dir(self) -> Path:
        return self.root / MASK_SETS[0]

    @property
    def crf_dir(self) -> Path:
        return self.root / MASK_SETS[1]

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def image_scores(self) -> Path:
        return self.root / IMAGE_SCORES_FILE

    @property
    def report_html(self) -> Path:
        return report_files(self.root)[0]


@dataclass
class PseudoLabelSummary:
    """Counts of a run, over all processes: every image is written (new), changed (its bytes or tags changed since
    its masks were made: recomputed), already done, failed, or skipped by the loader."""

    total: int = 0
    written: int = 0
    already_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    written_per_process: list[int] = field(default_factory=list)
    report: dict | None = None
    skipped_by_loader: list[dict] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    report_html: str | None = None

    @classmethod
    def from_job(cls, counts: JobCounts, dataset, seconds: float) -> PseudoLabelSummary:
        """The summary of a prediction job (stage 1 or 2) over `dataset`: its counts gathered over the processes, and
        the images its loader left out (`loader_report`), which count in `total`."""
        accounting = loader_report(dataset)
        return cls(
            total=len(dataset) + len(accounting["skipped"]),
            written=counts.written,
            already_done=counts.already_done,
            failures=counts.failures,
            changed=list(counts.changed),
            seconds=seconds,
            written_per_process=counts.written_per_process,
            skipped_by_loader=accounting["skipped"],
            untagged=accounting["untagged"],
        )

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_status(self) -> int:
        """0: every image has its mask; 1: some images failed or were skipped by the loader (the rest was written)."""
        return 1 if self.failures or self.skipped_by_loader else 0

    def format_counts(self, out_dir, show: int = 20) -> str:
        """The printed account of a run: every image is written, already done, failed, skipped by the loader or
        changed (recomputed); files of a tagged folder without a tags row are listed as untagged."""
        lines = [
            f"{self.total} image(s): {self.written} written, {self.already_done} already done, {self.failed} failed, "
            f"{len(self.skipped_by_loader)} skipped by the loader, {len(self.changed)} changed since their masks were "
            f"made (recomputed) ({self.seconds:.1f}s). Masks in {out_dir}; summary in "
            f"{OutputLayout(Path(out_dir)).summary_path}."
        ]
        lines += [f"  changed: {image_id}" for image_id in self.changed[:show]]
        lines += [f"  failed: {f.id} [{f.stage}] {f.error}" for f in self.failures[:show]]
        lines += [f"  skipped by the loader: {s['id']}: {s['reason']}" for s in self.skipped_by_loader[:show]]
        if self.untagged:
            lines.append(f"{len(self.untagged)} image file(s) in the folder have no tags row (not labelled):")
            lines += [f"  untagged: {name}" for name in self.untagged[:show]]
        hidden = max(0, len(self.failures) - show) + max(0, len(self.skipped_by_loader) - show)
        hidden += max(0, len(self.changed) - show)
        hidden += max(0, len(self.untagged) - show)
        if hidden:
            lines.append(f"  ... and {hidden} more in summary.json")
        if self.report_html:
            lines.append(f"Every image and its masks, to look at: {self.report_html}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "written": self.written,
            "already_done": self.already_done,
            "changed": len(self.changed),
            "changed_ids": list(self.changed),
            "failed": self.failed,
            "failures": [asdict(f) for f in self.failures],
            "skipped_by_loader": len(self.skipped_by_loader),
            "skipped": list(self.skipped_by_loader),
            "untagged": list(self.untagged),
            "seconds": round(self.seconds, 3),
            "written_per_process": list(self.written_per_process),
        }


def run_origin(model, dataset_name, split, data_root, state) -> dict:
    """The fields of a run's `summary.json` that say what it ran: on which dataset, split and data root (where the
    images are, for `cpfcte-hf export`), with which model, over how many processes."""
    return {
        "dataset": dataset_name,
        "data_root": None if data_root is None else str(data_root),
        "split": split,
        "model": getattr(model.config, "_name_or_path", None),
        "num_processes": state.num_processes,
    }


def _write_summary(
    layout, summary, model, config, checked: SplitCheck, size, dataset_name, split, state, data_root=None
):
    """`summary.json` (atomically): the counts, the failures and the settings of the run (the CRF workers each
    process had: `job_crf_workers`, as the job)."""
    payload = {
        **summary.to_dict(),
        **run_origin(model, dataset_name, split, data_root, state),
        "crf_workers_per_process": job_crf_workers(config, state),
        "config": {**config.to_dict(), "size": size},
        "class_names": names_of(model.config),
        "dataset_class_mapping": dict(zip(checked.dataset_names, checked.class_mapping)),
        "fingerprint": FINGERPRINT_FILE,
        "sources": SOURCES_FILE,
        "stage": "pseudo_labels",
        "prediction_sets": {"BPM": "bpm", **({"CRF": "crf"} if config.crf else {})},
        "layout": {
            "bpm": "bpm/<id>.png",
            "crf": "crf/<id>.png" if config.crf else None,
            "report": "report/",
            "image_scores": IMAGE_SCORES_FILE,
            "report_html": REPORT_FILE if config.report_html else None,
        },
    }
    atomic_write_text(layout.summary_path, json.dumps(payload, indent=2) + "\n")


@dataclass
class SplitCheck:
    """What `check_split` found: the dataset's class names and their model ids, the image ids, label masking."""

    dataset_names: list[str]
    class_mapping: list[int]
    ids: list[str]
    use_labels: bool
