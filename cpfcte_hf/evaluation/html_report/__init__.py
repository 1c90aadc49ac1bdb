# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`report.html`: a run's masks to look at, next to its outputs.

    OUT/report.html            one self-contained page: settings, accounting, per-class IoU, a grid of every image
    OUT/report_assets/         its thumbnails (the photo, the ground truth and each mask over it), small JPEGs

Written at the end of `cpfcte-hf label` (OUT = the output folder), of stage-2 prediction (OUT =
`<run>/predictions/<split>`) and of `cpfcte-hf evaluate` (OUT = its report folder). `write_html_report(OUT, dataset)`
rebuilds it from what the run left in OUT (`page.read_run_records`) and the split it was made from.

The parts: `records` reads what the run left in its folder, `page` builds the page model from it, `thumbnails` draws
the pictures, `render` writes the HTML (its script and style are `templates/`), `browser` drives headless Chromium
for the tests and the benchmark.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...utils.io import atomic_write_text
from .page import ReportPage, ReportRow, build_report_page
from .records import NotARunDirectory, RunRecords, read_run_records
from .render import render_report_page
from .thumbnails import ASSETS_DIR


REPORT_FILE = "report.html"


def write_html_report(directory: str | os.PathLike, dataset, state=None, progress: bool = False) -> Path | None:
    """
    Writes `<directory>/report.html` (atomically) and its thumbnails for the run in `directory`, made from `dataset`.
    Under several processes (`state`, `prediction.distributed_state()`) each draws its share of the thumbnails and
    the main process writes the page.

    Returns:
        The page's path on the main process, `None` on the others.

    Raises:
        NotARunDirectory: `directory` is not a run's output (no `summary.json`, no evaluation `metrics.json`).
    """
    page = build_report_page(read_run_records(directory), dataset, state=state, progress=progress)
    if page is None:
        return None
    path = Path(directory) / REPORT_FILE
    atomic_write_text(path, render_report_page(page))
    return path


def report_files(directory: str | os.PathLike) -> tuple[Path, Path]:
    """The page and its thumbnail folder in `directory` (what `--overwrite` deletes with the masks)."""
    return Path(directory) / REPORT_FILE, Path(directory) / ASSETS_DIR


__all__ = [
    "ASSETS_DIR",
    "REPORT_FILE",
    "NotARunDirectory",
    "ReportPage",
    "ReportRow",
    "RunRecords",
    "build_report_page",
    "read_run_records",
    "render_report_page",
    "report_files",
    "write_html_report",
]
