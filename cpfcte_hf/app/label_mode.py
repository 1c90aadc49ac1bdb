# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Label mode: upload photos, tick their tags, get the masks.

With tags, each photo goes through the package's pseudo-labelling pipeline (`pipelines.
WeaklySupervisedPseudoLabelingPipeline`: the model at its inference size, class masking by the tags, the dense CRF),
after the photo is brought to `label`'s working size (`inference.cap_image_side`, the mask restored to the photo's
size): the masks are the ones `cpfcte-hf label` would write for the same photo and tags. Without tags, a stage-2
model (`--stage2`) segments the photo with stage 2's multi-scale inference (`inference.max_fused_probabilities`, then
the dense CRF), as stage-2 prediction does; without one, the page says that untagged photos need it.

Masks are palette PNGs of class ids (`visualization.save_mask`), shown blended over the photo in the package's
palette (`visualization.overlay_mask`), one file per photo and a zip of all of them.
"""

from __future__ import annotations

import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.cpfcte.crf import DenseCRFConfig, crf_mask
from ..models.cpfcte.inference import cap_image_side, check_image_size, max_fused_probabilities, restore_mask_size
from ..models.cpfcte.visualization import overlay_mask, save_mask, voc_palette
from .limits import (
    AppInputError,
    UploadLimits,
    UploadRefused,
    check_file_count,
    markdown_text,
    read_upload,
    upload_name,
)


OVERLAY_ALPHA = 0.55
TOP_SCORES = 5  # class scores listed per photo


@dataclass
class AppModels:
    """The models the app labels with: stage 1 (and its pipeline), optionally stage 2."""

    name: str
    model: object
    processor: object
    labeller: object
    stage2: object | None = None
    stage2_processor: object | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one photo at a time: bounded memory

    @property
    def class_names(self) -> list[str]:
        return [str(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]


def _load(name, expected_type: str, option: str, device=None, **hub_kwargs):
    """`utils.checkpoints.load_model` of `name` after checking its config is of `expected_type`."""
    from ..utils.checkpoints import load_model, load_model_config

    try:
        config, located = load_model_config(name)
    except OSError as error:
        raise AppInputError(f"--{option}: {error}") from None
    if getattr(config, "model_type", None) != expected_type:
        raise AppInputError(
            f"--{option} {name}: a {getattr(config, 'model_type', '?')!r} model, not {expected_type!r} "
            f"({'the stage-1 CPF-CTE checkpoint' if option == 'model' else 'a stage-2 DeepLab-v2 checkpoint'})."
        )
    try:
        return load_model(name, device=device, config=config, **located, **hub_kwargs)
    except OSError as error:
        raise AppInputError(f"--{option}: {error}") from None


def load_app_models(model, stage2=None, trust_remote_code: bool = False, device=None) -> AppModels:
    """
    Loads the stage-1 checkpoint `model` (a folder or a Hub id; with `trust_remote_code`, the checkpoint's own code,
    as a Space of a pushed model runs it) and its pipeline, and the stage-2 checkpoint `stage2` if given.

    Raises:
        AppInputError: a folder that is no checkpoint, or of the wrong kind (the message names the option).
    """
    from ..models import register_with_transformers
    from ..models.cpfcte.pipelines import WeaklySupervisedPseudoLabelingPipeline

    register_with_transformers()  # the models and the pipeline task, for the Auto classes and `pipeline`

    extra = {"trust_remote_code": True} if trust_remote_code else {}
    loaded, processor = _load(os.fspath(model), "cpfcte", "model", device, **extra)
    labeller = WeaklySupervisedPseudoLabelingPipeline(model=loaded, image_processor=processor)
    models = AppModels(os.fspath(model), loaded, processor, labeller)
    if stage2 is not None:
        models.stage2, models.stage2_processor = _load(os.fspath(stage2), "deeplab_v2", "stage2", device)
    return models


# ---------------------------------------------------------------------------------------------------- one photo


@dataclass
class PhotoResult:
    """The masks of one photo: `mask` (CRF), its overlay, and `scores` `[(class name, score)]`, highest first."""

    mask: np.ndarray
    overlay: np.ndarray
    scores: list[tuple[str, float]]
    how: str


def untagged_message(models: AppModels) -> str:
    return (
        "No tags ticked. Tick the classes that are in the photos: stage 1 labels photos from their tags. Untagged "
        "photos need a stage-2 model: start the app with --stage2 DIR (a `cpfcte-hf train-deeplab` output)."
    )


def _stage1(models: AppModels, rgb: np.ndarray, tags: list[str]) -> PhotoResult:
    from ..models.cpfcte.crf import DEFAULT_CRF_MAX_SIDE

    working = cap_image_side(rgb, DEFAULT_CRF_MAX_SIDE)  # what `label` does with a large photo
    result = models.labeller(working, tags=list(tags))
    mask = restore_mask_size(np.asarray(result["mask"]), rgb.shape[:2])
    scores = sorted(result["scores"].items(), key=lambda item: -item[1])
    return PhotoResult(mask, overlay_mask(rgb, mask, OVERLAY_ALPHA), scores, "stage 1, tags " + ", ".join(tags))


def _stage2(models: AppModels, rgb: np.ndarray) -> PhotoResult:
    from ..models.cpfcte.crf import DEFAULT_CRF_MAX_SIDE
    from ..prediction.config import MultiScaleEvalConfig
    from ..prediction.segment import _image_statistics

    settings = MultiScaleEvalConfig()  # stage 2's test-time recipe: scales fused by max, then the dense CRF
    mean, std = _image_statistics(models.stage2_processor)
    working = cap_image_side(rgb, DEFAULT_CRF_MAX_SIDE)
    probabilities = max_fused_probabilities(models.stage2, working, settings.scales, settings.flip, mean, std)
    mask = crf_mask(working, probabilities.numpy(), settings.crf_config or DenseCRFConfig())
    mask = restore_mask_size(mask, rgb.shape[:2])
    names = models.stage2.config.id2label
    share = np.bincount(mask.ravel(), minlength=len(names)) / mask.size  # stage 2 has no image-level scores
    scores = sorted(((str(names[c]), float(share[c])) for c in range(len(names))), key=lambda item: -item[1])
    return PhotoResult(mask, overlay_mask(rgb, mask, OVERLAY_ALPHA), scores, "stage 2 (untagged), pixel shares")


def label_photo(models: AppModels, rgb: np.ndarray, tags: list[str]) -> PhotoResult:
    """
    The masks of one photo: stage 1 with `tags`, else stage 2.

    Raises:
        ValueError: a photo smaller than one patch, an unknown tag, or no tags and no stage-2 model.
    """
    check_image_size(rgb, models.model.config.patch_size, name="the photo")
    if not tags and models.stage2 is None:
        raise ValueError(untagged_message(models))
    with models.lock:
        return _stage1(models, rgb, tags) if tags else _stage2(models, rgb)


# -------------------------------------------------------------------------------------------------- a request


@dataclass
class LabelOutcome:
    """What one click of "Label" gives the page."""

    overlays: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (overlay, caption) per labelled photo
    scores: list[list] = field(default_factory=list)  # [photo, class, score] rows
    files: list[str] = field(default_factory=list)  # the mask PNGs, then a zip of them when there are several
    problems: list[str] = field(default_factory=list)  # one line per photo that was not labelled
    classes: set[int] = field(default_factory=set)


def _mask_name(name: str, used: set[str]) -> str:
    stem = Path(name).stem or "photo"
    candidate, n = f"{stem}.png", 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}.png"
    used.add(candidate)
    return candidate


def label_uploads(models: AppModels, paths, tags, limits: UploadLimits, workdir: str | os.PathLike) -> LabelOutcome:
    """Labels every uploaded photo of a request into a new folder under `workdir`; every photo is accounted for:
    labelled, or listed in `problems` with its reason."""
    outcome = LabelOutcome()
    paths = check_file_count(paths, limits)
    if not paths:
        outcome.problems.append("Upload one or more photos first.")
        return outcome
    if not tags and models.stage2 is None:
        outcome.problems.append(untagged_message(models))
        return outcome
    folder = Path(tempfile.mkdtemp(prefix="masks-", dir=workdir))
    used: set[str] = set()
    for path in paths:
        name = upload_name(path)
        try:
            result = label_photo(models, read_upload(path, limits), list(tags or []))
        except (UploadRefused, ValueError) as error:
            message = str(error)
            outcome.problems.append(message if message.startswith(name) else f"{name}: {message}")
            continue
        outcome.files.append(save_mask(result.mask, folder / _mask_name(name, used)))
        outcome.overlays.append((result.overlay, f"{name} ({result.how})"))
        outcome.scores += [[name, cls, round(score, 4)] for cls, score in result.scores[:TOP_SCORES]]
        outcome.classes.update(int(c) for c in np.unique(result.mask))
    if len(outcome.files) > 1:
        archive = folder / "masks.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for file in outcome.files:
                bundle.write(file, os.path.basename(file))
        outcome.files.append(str(archive))
    return outcome


def legend_markdown(class_names, classes) -> str:
    """The colours of `classes` as HTML (names escaped: a class name is text, never markup)."""
    palette = voc_palette()
    items = []
    for c in sorted(classes):
        if c < len(class_names):
            colour = "#" + bytes(int(v) for v in palette[c]).hex()
            items.append(f'<span style="color:{colour}">&#9632;</span> {markdown_text(str(class_names[c]))}')
    return "Colours: " + " · ".join(items) if items else ""


def outcome_message(outcome: LabelOutcome, class_names) -> str:
    lines = []
    if outcome.files:
        count = len(outcome.overlays)
        lines.append(f"Labelled {count} photo(s); the masks are PNGs of class ids (download below).")
        lines.append(legend_markdown(class_names, outcome.classes))
    if outcome.problems:
        lines.append("Not labelled:")
        lines += [f"- {markdown_text(problem)}" for problem in outcome.problems]
    return "\n\n".join(line for line in lines if line)


# ------------------------------------------------------------------------------------------------------- the page


def build_label_tab(gr, models: AppModels, limits: UploadLimits, workdir: str | os.PathLike) -> None:
    """The label mode's components and event, inside the caller's `gr.Blocks` (and tab)."""
    gr.Markdown(
        f"Upload photos ({markdown_text(limits.describe())}), tick the classes they show, and press **Label**. "
        "Model: " + markdown_text(models.name)
    )
    with gr.Row():
        with gr.Column(scale=1):
            photos = gr.File(label="Photos", file_count="multiple", elem_id="photos")
            tags = gr.CheckboxGroup(choices=models.class_names[1:], label="Tags (the classes in the photos)",
                                    elem_id="tags")  # fmt: skip
            button = gr.Button("Label", variant="primary", elem_id="label-button")
        with gr.Column(scale=2):
            message = gr.Markdown(elem_id="label-message")
            gallery = gr.Gallery(label="Masks over the photos", columns=2, elem_id="overlays")
            scores = gr.Dataframe(headers=["photo", "class", "score"], label="Class scores", elem_id="scores")
            masks = gr.File(label="Masks (PNG, class ids)", file_count="multiple", elem_id="masks")

    def run(paths, ticked):
        try:
            outcome = label_uploads(models, paths, ticked, limits, workdir)
        except UploadRefused as error:
            outcome = LabelOutcome(problems=[str(error)])
        table = outcome.scores or [["", "", ""]]
        return outcome_message(outcome, models.class_names), outcome.overlays, table, outcome.files or None

    button.click(run, inputs=[photos, tags], outputs=[message, gallery, scores, masks])


__all__ = [
    "AppInputError",
    "AppModels",
    "LabelOutcome",
    "PhotoResult",
    "build_label_tab",
    "label_photo",
    "label_uploads",
    "load_app_models",
]
