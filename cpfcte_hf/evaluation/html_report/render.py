# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`ReportPage` -> one self-contained HTML file: no network, no CDN, opens from disk in any browser.

The top of the page (settings, accounting, the per-class IoU chart as inline SVG, the per-class table) is rendered
here by Jinja2 with autoescaping on, so that every file name, tag and class name is text. The grid of images is drawn
by the page's own script (`templates/report.js`) from one JSON blob inside the page (a `<script type=
"application/json">` block, `<`, `>`, `&` and `'` written as `\\u` escapes so that no value can close it), a page of
cards at a time, with lazy images; the script writes every value with `textContent`, never as markup. The page's
Content-Security-Policy lets only its own script run (by its SHA-256) and load nothing from the network.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path

from .page import ReportPage
from .thumbnails import THUMBNAIL_SIDE


TEMPLATES = Path(__file__).resolve().parent / "templates"
SET_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
PAGE_SIZES = (24, 48, 96, 192)
DEFAULT_PAGE_SIZE = 48


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )
    environment.filters["percent"] = lambda value: "–" if value is None else f"{100 * value:.1f}"
    return environment


def sort_options(page: ReportPage) -> list[dict]:
    """The grid's orders, the first is the default: worst first by the last prediction set's per-image mIoU when
    there is ground truth, else by the image-level score of the tags (stage 1), else problems first."""
    options = []
    if page.has_ground_truth:
        for name in reversed(page.sets):
            options.append({"value": f"miou:{name}:asc", "label": f"mIoU {name}: worst first"})
            options.append({"value": f"miou:{name}:desc", "label": f"mIoU {name}: best first"})
    if page.has_scores:
        options.append({"value": "tag_score::asc", "label": "Tag score: lowest first"})
        options.append({"value": "tag_score::desc", "label": "Tag score: highest first"})
    options.append({"value": "status::asc", "label": "Problems first"})
    options.append({"value": "id::asc", "label": "Name"})
    options.append({"value": "index::asc", "label": "Order of the split"})
    return options


def iou_chart(page: ReportPage) -> dict | None:
    """Geometry of the per-class IoU bar chart (SVG user units): one group of bars per class, one bar per set."""
    if not page.per_class:
        return None
    sets = list(page.mean_iou)
    bar, gap, plot_height, top, left = 12, 10, 180, 28, 36
    group = bar * len(sets) + gap
    width = left + group * len(page.per_class) + 10
    bars, labels = [], []
    for position, row in enumerate(page.per_class):
        x0 = left + position * group + gap / 2
        for k, name in enumerate(sets):
            value = row["iou"].get(name)
            height = 0.0 if value is None else plot_height * max(0.0, min(1.0, value))
            bars.append(
                {
                    "x": x0 + k * bar,
                    "y": top + plot_height - height,
                    "width": bar - 1,
                    "height": height,
                    "color": SET_COLORS[k % len(SET_COLORS)],
                    "title": f"{row['class_name']} · {name}: "
                    + ("no pixels" if value is None else f"{100 * value:.1f}% IoU"),
                }
            )
        labels.append({"x": x0 + bar * len(sets) / 2, "y": top + plot_height + 8, "text": row["class_name"]})
    longest = max((len(str(row["class_name"])) for row in page.per_class), default=4)
    legend = [
        {"x": left + 4 + 170 * k, "color": SET_COLORS[k % len(SET_COLORS)], "name": name, "miou": page.mean_iou[name]}
        for k, name in enumerate(sets)
    ]
    ticks = [{"y": top + plot_height * (1 - f), "label": f"{int(100 * f)}"} for f in (0, 0.25, 0.5, 0.75, 1)]
    return {
        "width": max(width, left + 170 * len(sets) + 10),
        "height": top + plot_height + 12 + 6.5 * min(longest, 24),
        "left": left,
        "right": width - 10,
        "bars": bars,
        "labels": labels,
        "legend": legend,
        "ticks": ticks,
    }


def page_data(page: ReportPage) -> dict:
    """The JSON blob the page's script reads."""
    options = sort_options(page)
    return {
        "class_names": page.class_names,
        "class_colors": page.class_colors,
        "panels": page.panels,
        "sets": page.sets,
        "sorts": options,
        "page_sizes": list(PAGE_SIZES),
        "page_size": DEFAULT_PAGE_SIZE,
        "thumbnail_side": THUMBNAIL_SIDE,
        "rows": [row.to_json() for row in page.rows],
    }


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_report_page(page: ReportPage) -> str:
    """The whole `report.html` of `page` as a string."""
    from jinja2.utils import htmlsafe_json_dumps

    environment = _environment()
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    if "</" in script or "</" in style:
        raise ValueError("The report's script and style must not contain '</' (they are inlined).")
    data = htmlsafe_json_dumps(page_data(page), separators=(",", ":"), ensure_ascii=False)
    return environment.get_template("report.html.j2").render(
        page=page,
        chart=iou_chart(page),
        data=data,
        script=script,
        style=style,
        script_hash=_csp_hash(script),
    )


__all__ = ["render_report_page", "sort_options", "page_data", "iou_chart"]
