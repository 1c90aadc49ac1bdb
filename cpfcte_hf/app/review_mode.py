# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Review mode: page through a labelling run's masks worst first; accept, reject or retag each image.

The run is read as `report.html` reads it (`html_report.read_run_records`: summary, fingerprint, per-image mIoU and
image-level scores), and its rows (each image's tags, score and photo file) from the data of the `report.html` the
run wrote next to its masks. The order is the report's default: per-image mIoU of the last mask set when the split
had ground truth, else the image-level score of the tags, lowest first.

Decisions go to `OUTPUT_DIR/review.json` (`cpfcte_hf.review`). A retagged image is relabelled with its new tags by
stage 1's own functions and prediction job (`prediction.pseudo_labels._pseudo_label_functions`, `prediction.
run_prediction_job`) with the settings the run recorded in `fingerprint.json`, under the directory's lock; its masks
are rewritten atomically. Nothing else in the directory changes.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.cpfcte.inference import cap_image_side
from ..models.cpfcte.visualization import overlay_mask, read_mask
from ..review import read_review, record_decision
from .limits import AppInputError, markdown_text


DISPLAY_SIDE = 1024  # the pictures sent to the browser are at most this wide or high
MIN_DISPLAY_SIDE = 320  # and smaller photos are enlarged (nearest) to at least this, to be seen
_DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


@dataclass
class ReviewItem:
    """One image of the run with masks: its id, tags (model class ids), score and pictures."""

    id: str
    tags: list[int]
    score: float | None
    score_name: str
    photo: Path | None
    thumbnail: Path | None


def read_report_rows(directory: Path) -> list[dict]:
    """The rows of the run's `report.html` (its data blob: ids, tags, scores, thumbnails, the photo's file)."""
    page = directory / "report.html"
    if not page.is_file():
        raise AppInputError(
            f"{directory} has no report.html (the run was made with --no_report_html): rerun the same `cpfcte-hf "
            "label` command without that option to write it, then review."
        )
    match = _DATA.search(page.read_text(encoding="utf-8"))
    try:
        return json.loads(match.group(1))["rows"]
    except (AttributeError, ValueError, KeyError) as error:
        raise AppInputError(f"{page}: no report data in it ({error}); rewrite it by rerunning `label`.") from None


def _inside(directory: Path, relative: str | None) -> Path | None:
    """`directory/relative` (a report URL, percent-encoded) if it is a file, else None."""
    if not relative:
        return None
    path = (directory / urllib.parse.unquote(relative)).resolve()
    return path if path.is_file() else None


def review_items(directory: Path, rows: list[dict], sets: list[str]) -> list[ReviewItem]:
    """The images with masks, worst first (see the module docstring)."""
    last = sets[-1] if sets else None
    items = []
    for row in rows:
        if row.get("status") != "ok":
            continue
        thumbnails, links = row.get("thumbnails") or [None], row.get("links") or [None]
        miou = (row.get("miou") or {}).get(last)
        score, name = (miou, f"mIoU {last}") if miou is not None else (row.get("tag_score"), "tag score")
        thumbnail = _inside(directory, thumbnails[0])
        photo = _inside(directory, links[0]) if links else None
        items.append(ReviewItem(str(row["id"]), list(row.get("tags") or []), score, name, photo, thumbnail))
    order = {id(item): k for k, item in enumerate(items)}
    return sorted(items, key=lambda item: (item.score is None, item.score or 0.0, order[id(item)]))


class _DiscardScores:
    """A relabel keeps `image_scores.jsonl` as it is: the model's image-level scores do not depend on the tags."""

    def append(self, ids, scores) -> None:
        pass


class ReviewSession:
    """A labelling output directory under review (see the module docstring); `models` relabel retagged images."""

    def __init__(self, output_dir, models=None):
        from ..evaluation.html_report import NotARunDirectory, read_run_records
        from ..review import ReviewFileError

        self.directory = Path(output_dir).resolve()
        if not self.directory.is_dir():
            raise AppInputError(f"--review {output_dir}: no such directory.")
        try:
            self.records = read_run_records(self.directory)
            read_review(self.directory)
        except (NotARunDirectory, ReviewFileError, ValueError) as error:
            raise AppInputError(f"--review {output_dir}: {error}") from None
        if self.records.stage != "pseudo_labels":
            raise AppInputError(
                f"--review {output_dir}: the output of {self.records.stage!r}, not of `cpfcte-hf label`: review "
                "reads a labelling output directory (bpm/, crf/, summary.json)."
            )
        self.models = models
        self.sets = list(self.records.sets)
        self.items = review_items(self.directory, read_report_rows(self.directory), self.sets)
        self.class_names = list(self.records.class_names)
        self._weights_checked = False

    def __len__(self) -> int:
        return len(self.items)

    def mask_path(self, item: ReviewItem) -> Path:
        return self.records.sets[self.sets[-1]] / f"{item.id}.png"

    def pictures(self, item: ReviewItem) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The photo and the last mask set over it, at most `DISPLAY_SIDE` px (the thumbnail when the photo is not
        a file)."""
        from PIL import Image

        from ..models.cpfcte.image_processing_cpfcte import to_rgb_array
        from ..models.cpfcte.visualization import as_displayed

        source = item.photo or item.thumbnail
        if source is None:
            return None, None
        with Image.open(source) as image:
            photo = cap_image_side(to_rgb_array(as_displayed(image)), DISPLAY_SIDE)
        try:
            mask = read_mask(self.mask_path(item))
        except OSError:
            return photo, None
        small = Image.fromarray(mask).resize(photo.shape[1::-1], Image.Resampling.NEAREST)
        factor = max(1, MIN_DISPLAY_SIDE // max(photo.shape[:2]))
        masked = overlay_mask(photo, np.asarray(small), 0.55)
        return tuple(np.repeat(np.repeat(a, factor, 0), factor, 1) for a in (photo, masked))

    def decision_of(self, item: ReviewItem) -> dict | None:
        return read_review(self.directory).get(item.id)

    def current_tags(self, item: ReviewItem) -> list[str]:
        decision = self.decision_of(item) or {}
        if decision.get("decision") == "retag":
            return list(decision["tags"])
        return [self.class_names[c] for c in item.tags if 0 < c < len(self.class_names)]

    def describe(self, index: int) -> str:
        item = self.items[index]
        decision = self.decision_of(item)
        score = "–" if item.score is None else f"{item.score:.3f}"
        made = "none yet" if decision is None else f"{decision['decision']} ({decision['time']})"
        return (
            f"**{index + 1} of {len(self.items)}** (worst first) · {markdown_text(item.id)} · {item.score_name} "
            f"{score} · tags: {markdown_text(', '.join(self.current_tags(item)) or 'none')} · decision: "
            f"{markdown_text(made)}"
        )

    def decide(self, index: int, decision: str) -> str:
        item = self.items[index]
        record_decision(self.directory, item.id, decision)
        return f"{markdown_text(item.id)}: {decision}ed, recorded in {markdown_text(self.directory / 'review.json')}."

    # -------------------------------------------------------------------------------------------------- retag

    def _check_relabel(self, item: ReviewItem) -> dict:
        """The run's recorded settings, after checking that the app's model made these masks and the photo is the
        one they were made from."""
        from ..prediction.job import ContentRecord, ImageSource
        from ..prediction.sources import content_key
        from ..utils.fingerprint import weights_digest

        fingerprint = self.records.fingerprint or {}
        if self.models is None or not fingerprint.get("use_image_labels"):
            raise ValueError("retag needs the run's model (--model) and a run labelled from tags.")
        if not self._weights_checked:
            model = self.models.model
            labels = {str(i): str(name) for i, name in sorted(model.config.id2label.items())}
            if weights_digest(model) != fingerprint.get("model_weights") or labels != fingerprint.get("id2label"):
                raise ValueError(f"--model {self.models.name} is not the model that made these masks: retag refused.")
            self._weights_checked = True
        if item.photo is None:
            raise ValueError(f"the photo of {item.id!r} is not a file on disk (the report names none).")
        recorded = ContentRecord(self.directory).load().get(item.id) or {}
        if content_key(ImageSource(path=str(item.photo)), recorded).get("blake2b") != recorded.get("blake2b"):
            raise ValueError(f"{item.photo} changed since its masks were made: rerun `label` first.")
        return fingerprint

    def retag(self, index: int, tags: list[str]) -> str:
        """Relabels image `index` with `tags` (class names) and records the retag (see the module docstring)."""
        from ..models.cpfcte.class_names import class_ids_from_tags
        from ..prediction.job import run_prediction_job
        from ..utils.output_dir import hold_output_dir

        item = self.items[index]
        if not tags:
            raise ValueError("tick at least one tag to retag.")
        fingerprint = self._check_relabel(item)
        ids = class_ids_from_tags(tags, self.models.model.config.id2label)
        read, predict, config = self._relabel_functions(item, ids, fingerprint)
        layout_crf = self.records.sets.get("CRF") if fingerprint.get("crf") else None
        with self.models.lock, hold_output_dir(self.directory):  # one model call at a time, as label mode
            counts = run_prediction_job(
                [item.id], read, predict, self.records.sets["BPM"], layout_crf, config.crf_config, crf_workers=0,
                overwrite=True, progress=False,
            )  # fmt: skip
            if counts.failures:
                failure = counts.failures[0]
                raise ValueError(f"relabelling {item.id!r} failed ({failure.stage}): {failure.error}")
            record_decision(self.directory, item.id, "retag", tags)
        return f"{markdown_text(item.id)}: relabelled with {markdown_text(', '.join(tags))}; masks rewritten."

    def _relabel_functions(self, item: ReviewItem, ids: list[int], fingerprint: dict):
        """Stage 1's `read` and `predict` for this one image and its new tags, with the run's recorded settings."""
        import datasets

        from ..prediction.pseudo_labels import PseudoLabelConfig, SplitCheck, _pseudo_label_functions

        model = self.models.model
        config = PseudoLabelConfig(
            size=fingerprint["size"], scales=tuple(fingerprint["scales"]), flip=fingerprint["flip"],
            crf=fingerprint["crf"] is not None, crf_config=fingerprint["crf"] or {}, crf_workers=0,
            crf_max_side=fingerprint["crf_max_side"], progress=False, report_html=False,
        )  # fmt: skip
        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "image": datasets.Image(),
                "labels": datasets.Sequence(datasets.Value("int64")),
            }
        )
        dataset = datasets.Dataset.from_dict(
            {"id": [item.id], "image": [str(item.photo)], "labels": [ids]}, features=features
        )
        check = SplitCheck(self.class_names, list(range(model.config.num_labels)), [item.id], True)
        read, predict = _pseudo_label_functions(
            model, dataset, check, config, fingerprint["size"], fingerprint["image_mean"], fingerprint["image_std"],
            _DiscardScores(),
        )  # fmt: skip
        return read, predict, config


# ------------------------------------------------------------------------------------------------------- the page


def build_review_tab(gr, session: ReviewSession) -> None:
    """The review mode's components and events, inside the caller's `gr.Blocks` (and tab)."""
    from ..utils.output_dir import OutputDirInUse

    skipped = len(session.records.summary.get("failures", [])) + len(session.records.summary.get("skipped", []))
    gr.Markdown(
        f"Reviewing {markdown_text(session.directory)}: {len(session)} image(s) with masks, worst first"
        + (f" ({skipped} failed or skipped image(s) have none: see its report.html)." if skipped else ".")
    )
    position = gr.State(0)
    info = gr.Markdown(elem_id="review-info")
    with gr.Row():
        photo = gr.Image(label="Photo", interactive=False, elem_id="review-photo")
        overlay = gr.Image(label=f"Mask ({session.sets[-1]}) over the photo", interactive=False, elem_id="review-mask")
    with gr.Row():
        previous = gr.Button("◀ Previous", elem_id="review-previous")
        following = gr.Button("Next ▶", elem_id="review-next")
        accept = gr.Button("Accept", variant="primary", elem_id="review-accept")
        reject = gr.Button("Reject", variant="stop", elem_id="review-reject")
    with gr.Row():
        tags = gr.CheckboxGroup(choices=session.class_names[1:], label="Tags for a retag", elem_id="review-tags")
        retag = gr.Button("Retag and relabel", elem_id="review-retag")
    message = gr.Markdown(elem_id="review-message")
    outputs = [position, info, photo, overlay, tags, message]

    def show(index: int, text: str = ""):
        if not len(session):
            return 0, "No image of this run has masks to review.", None, None, [], text
        index = min(max(int(index), 0), len(session) - 1)
        item = session.items[index]
        picture, masked = session.pictures(item)
        return index, session.describe(index), picture, masked, session.current_tags(item), text

    def act(index: int, what: str, ticked=None):
        try:
            if what == "retag":
                return show(index, session.retag(index, list(ticked or [])))
            return show(index + 1, session.decide(index, what))
        except (OutputDirInUse, ValueError, OSError) as error:
            return show(index, f"Not recorded: {markdown_text(str(error))}")

    previous.click(lambda i: show(i - 1), inputs=position, outputs=outputs)
    following.click(lambda i: show(i + 1), inputs=position, outputs=outputs)
    accept.click(lambda i: act(i, "accept"), inputs=position, outputs=outputs)
    reject.click(lambda i: act(i, "reject"), inputs=position, outputs=outputs)
    retag.click(lambda i, t: act(i, "retag", t), inputs=[position, tags], outputs=outputs)
    return show, outputs


__all__ = ["DISPLAY_SIDE", "ReviewItem", "ReviewSession", "build_review_tab", "read_report_rows", "review_items"]
