# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 1's product: a directory of pseudo-label masks for a dataset split, and a report of how good they are.

`generate_pseudo_labels` runs docs/method.md §3 over a `datasets.Dataset` (columns `image`, `labels`, `id`, optional
`mask`; the schema of `cpfcte_hf.data`): high-resolution inference, class masking by the image-level labels,
per-class max normalisation, bilinear upsampling, argmax (BPM), dense CRF over a process pool. It writes

```
OUT/
  bpm/<id>.png                   baseline pseudo masks (argmax before the CRF), VOC palette PNG, values = class ids
  crf/<id>.png                   CRF-refined masks (the pseudo-labels for stage 2); absent with crf=False
  summary.json                   counts (written, already done, failed, changed), failures with reasons, the settings
  fingerprint.json               what determines the masks (`cpfcte_hf.utils.fingerprint`): other settings are refused
  sources.json                   per image, the content (file size and times, digest of the bytes) and tags its masks
                                 were made from: a changed image is recomputed (`cpfcte_hf.prediction.job.ContentRecord`)
  .cpfcte-hf.lock(.json)         while a run works: its lock and who holds it (`cpfcte_hf.prediction.job.hold_output_dir`)
  image_scores.jsonl             each image's image-level class scores (`cpfcte_hf.evaluation.image_records`)
  report.html, report_assets/    every image with its masks, scores and accounting, to look at (`cpfcte_hf.evaluation.html_report`)
  report/                        only when the split has ground-truth masks (see `evaluate_predictions`)
    metrics.json                 mIoU, pixel accuracy, per-class IoU for BPM and CRF
    per_class_iou.csv            one row per class: id, name, ground-truth pixels, IoU per prediction set
    per_class_iou.png            bar plot of the per-class IoU
    per_image.json               each image's mIoU per prediction set
    overlays/<id>.png            image | ground truth | BPM | CRF panels for the first few images
```

Every PNG and report file is written to a temporary file in its folder and renamed into place, so a killed run
leaves only complete files; a rerun skips the images whose masks exist and were made from the same image, and redoes
the rest. Under `accelerate launch` (or `torchrun`) each process takes every N-th image and the confusion matrices
are summed over processes before the report is written once.

`evaluate_predictions` gives the same report for any directories of masks (`scripts/evaluate.py`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import load_split
from ..evaluation.html_report import report_files
from ..evaluation.image_records import ImageScoreLog
from ..evaluation.report import (
    evaluate_predictions,
    format_report,
    write_report_page,
)
from ..models.cpfcte.class_names import dataset_class_names, names_of
from ..models.cpfcte.crf import DEFAULT_CRF_MAX_SIDE
from ..models.cpfcte.image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD, to_rgb_array
from ..models.cpfcte.inference import (  # noqa: F401  (DEFAULT_INFERENCE_SIZE: a 0.1.0 name of this module)
    DEFAULT_INFERENCE_SIZE,
    cap_image_side,
    check_image_size,
    multi_hot,
    predict_class_probabilities,
)
from ..utils.arguments import parse_key_values  # noqa: F401  (re-exported: scripts and stage 2 import it from here)
from ..utils.checkpoints import (
    load_model,
    load_model_config,
)
from ..utils.distributed import job_crf_workers, job_threads
from ..utils.interrupts import Interrupted, stop_on_signals
from ..utils.output_dir import hold_output_dir, remove_temporary_files
from .config import PseudoLabelConfig
from .job import (
    Failure,
    distributed_state,
    finish_distributed,
    gather_counts,
    progress_bar,
    run_prediction_job,
    safe_file_id,
)
from .outputs import (
    OutputLayout,
    PseudoLabelSummary,
    SplitCheck,
    _write_summary,
)
from .pseudo_label_setup import (
    _image_labels,
    check_mask_paths,
    check_split,
    prepare_resume,
    pseudo_label_fingerprint,
    resolve_inference_size,
)
from .sources import DatasetSources
from .upsampling import predict_with_crf_input


logger = logging.getLogger(__name__)


def _pseudo_label_functions(
    model, dataset, split: SplitCheck, config: PseudoLabelConfig, size: int, mean, std, score_log: ImageScoreLog
):
    """The `read` and `predict` of `run_prediction_job` for stage 1 (see `generate_pseudo_labels`); `predict` also
    appends each image's image-level scores to `score_log` (the report's)."""
    num_labels, mapping = model.config.num_labels, split.class_mapping

    def read(index: int):
        image_id, row = split.ids[index], dataset[index]
        rgb = to_rgb_array(row["image"])
        check_image_size(rgb, model.config.patch_size, name=f"Image {image_id!r}")
        original_size, capped = None, cap_image_side(rgb, config.crf_max_side)
        if capped is not rgb:
            check_image_size(capped, model.config.patch_size, name=f"Image {image_id!r} after crf_max_side")
            original_size, rgb = rgb.shape[:2], capped
        labels = None
        if split.use_labels:
            labels = multi_hot(sorted({0, *(mapping[int(c)] for c in row["labels"])}), num_labels)
        return rgb, (image_id, labels), original_size

    def predict(items):
        labels = torch.stack([labels for _, (_, labels) in items]) if split.use_labels else None
        rgbs = [rgb for rgb, _ in items]
        if config.crf and config.crf_upsampling == "half_pixel":  # (BPM map, CRF input) per image
            maps, scores = predict_with_crf_input(model, rgbs, labels, size, config.scales, config.flip, mean, std)
        else:
            maps, scores = predict_class_probabilities(
                model, rgbs, labels, size, config.scales, config.flip, mean, std
            )
        score_log.append([image_id for _, (image_id, _) in items], scores)  # the report's per-image scores
        return maps

    return read, predict


def generate_pseudo_labels(
    model,
    dataset,
    out_dir: str | os.PathLike,
    config: PseudoLabelConfig | None = None,
    image_processor=None,
    class_names: Sequence[str] | None = None,
    evaluate: bool | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
    data_root: str | os.PathLike | None = None,
) -> PseudoLabelSummary:
    """
    Writes `bpm/<id>.png` (and `crf/<id>.png`) for every image of `dataset` under `out_dir`, then, when the
    dataset has a `mask` column (and `evaluate` is not False), the report of `evaluate_predictions`.

    Args:
        model: a CPF-CTE model (`load_model`), on the device to use.
        dataset: a `datasets.Dataset` with `image`, `id`, and `labels` (class ids; needed for class masking) and
            optionally `mask` columns.
        out_dir: output directory (created; must not be a file). One run at a time: another run holding it is an
            `OutputDirInUse` error (`cpfcte_hf.prediction.job.hold_output_dir`).
        config: `PseudoLabelConfig`.
        image_processor: supplies `image_mean` / `image_std` (ViT-PCM's 0.5 / 0.5 if `None`).
        class_names: the dataset's class names (default: its ClassLabel names, else the model's id2label). They
            are mapped onto the model's `id2label` by name (`cpfcte_hf.models.cpfcte.class_names.map_class_names`: case and
            surrounding spaces ignored, any order or subset); a class the model does not know is a `ValueError`
            saying what to do. Masks and the report use the model's class ids and names.

    Returns:
        `PseudoLabelSummary` (over all processes; `report` holds the metrics when ground truth exists). Bad images
        (unreadable, smaller than a patch, id unusable as a file name, labels outside the classes, CRF failure) are
        logged with their id and counted in `failures`; the run goes on. Images whose bytes or tags changed since
        their masks were made are recomputed and listed in `changed`. Images the loader left out
        (`cpfcte_hf.data.loader_report`) are in `skipped_by_loader`, untagged files of a tagged folder in
        `untagged`. An id may name sub-folders (`cats/01` -> `crf/cats/01.png`); two ids that would write the
        same file are refused before anything is written, as are classes the model lacks.
    """
    config = config or PseudoLabelConfig()
    state = distributed_state()
    started = time.perf_counter()
    checked = check_split(dataset, model.config, class_names, config.use_image_labels)
    if config.use_image_labels and not checked.use_labels:
        logger.warning("The dataset has no `labels` column: pseudo-labels are made without class masking.")
    with hold_output_dir(out_dir, state), job_threads(state, job_crf_workers(config, state)):
        layout = OutputLayout(Path(out_dir))
        inference = _InferenceSettings.of(model, config, image_processor)
        prepare_resume(layout, inference.fingerprint(model, config, checked), config.overwrite, state)
        counts = run_prediction_job(**_stage_one_job(model, dataset, layout, config, checked, inference, state))
        summary = PseudoLabelSummary.from_job(gather_counts(state, counts), dataset, time.perf_counter() - started)
        origin = {"dataset_name": dataset_name, "split": split, "data_root": data_root}
        if evaluate or (evaluate is None and "mask" in dataset.column_names):
            summary.report = _evaluate_run(model, dataset, layout, config, checked, inference.size, **origin)
        if state.is_main_process:
            _write_summary(layout, summary, model, config, checked, inference.size, state=state, **origin)
        if config.report_html:
            summary.report_html = write_report_page(layout.root, dataset, state, config.progress)
    return summary


@dataclass(frozen=True)
class _InferenceSettings:
    """What the model sees of each image: the inference size and the normalisation."""

    size: int
    mean: Sequence[float]
    std: Sequence[float]

    @classmethod
    def of(cls, model, config: PseudoLabelConfig, image_processor) -> _InferenceSettings:
        """`config.size` (else the checkpoint's) and the processor's statistics (ViT-PCM's 0.5 / 0.5 without one)."""
        return cls(
            size=resolve_inference_size(config.size, model.config),
            mean=getattr(image_processor, "image_mean", None) or VIT_PCM_MEAN,
            std=getattr(image_processor, "image_std", None) or VIT_PCM_STD,
        )

    def fingerprint(self, model, config: PseudoLabelConfig, checked: SplitCheck) -> dict:
        """`pseudo_label_fingerprint` of a run with these settings over the split `checked`."""
        return pseudo_label_fingerprint(
            model, config, self.size, checked.dataset_names, checked.use_labels, self.mean, self.std,
            checked.class_mapping,
        )  # fmt: skip


def _stage_one_job(model, dataset, layout, config, checked: SplitCheck, inference: _InferenceSettings, state) -> dict:
    """The arguments of stage 1's `run_prediction_job`: BPM and CRF masks of every image, and each image's
    image-level scores into `image_scores.jsonl` on the way."""
    score_log = ImageScoreLog(layout.root)
    size, mean, std = inference.size, inference.mean, inference.std
    read, predict = _pseudo_label_functions(model, dataset, checked, config, size, mean, std, score_log)
    return dict(
        ids=checked.ids,
        read=read,
        predict=predict,
        mask_dir=layout.bpm_dir,
        crf_dir=layout.crf_dir if config.crf else None,
        crf_config=config.crf_config,
        crf_workers=config.crf_workers,
        batch_size=config.batch_size,
        overwrite=config.overwrite,
        progress=config.progress,
        desc="pseudo-labels",
        state=state,
        sources=DatasetSources(dataset),
        inputs=_image_labels(dataset, checked.class_mapping, checked.ids, checked.use_labels),
        record_dir=layout.root,
    )


def _evaluate_run(model, dataset, layout, config, checked: SplitCheck, size, dataset_name, split, data_root) -> dict:
    """`evaluate_predictions` of the run's BPM (and CRF) masks into `layout.report_dir`."""
    predictions = {"BPM": layout.bpm_dir}
    if config.crf:
        predictions["CRF"] = layout.crf_dir
    return evaluate_predictions(
        dataset,
        predictions,
        layout.report_dir,
        class_names=names_of(model.config),
        class_mapping=checked.class_mapping,
        num_overlays=config.num_overlays,
        dataset_name=dataset_name,
        split=split,
        progress=config.progress,
        stage="pseudo_labels",
        model=getattr(model.config, "_name_or_path", None),
        data_root=data_root,
        settings={**config.to_dict(), "size": size},
    )


# ------------------------------------------------------------------------------------------------- evaluation


# ------------------------------------------------------------------------------------------------ entry points


def run_pseudo_labeling(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset=None,
    dataset_name: str | None = None,
    data_root: str | os.PathLike | None = None,
    split: str = "train",
    config: PseudoLabelConfig | None = None,
    device: str | None = None,
    dataset_kwargs: dict | None = None,
) -> PseudoLabelSummary:
    """
    `scripts/pseudo_label.py` in one call: checks the output directory, loads the model (directory or Hub id) and
    the split (`load_split`, unless `dataset` is given), runs `generate_pseudo_labels`, prints the report table
    and the counts. SIGINT and SIGTERM raise `cpfcte_hf.utils.interrupts.Interrupted` (its `exit_code` is 130 / 143)
    after the CRF workers are stopped and temporary files removed: the output directory is left resumable.
    """
    config = config or PseudoLabelConfig()
    state = distributed_state()
    if device is None:  # a process of a launch: its own device; alone: the GPU if there is one, as always
        device = state.device if state.use_distributed else ("cuda" if torch.cuda.is_available() else "cpu")
    with stop_on_signals():
        try:
            with hold_output_dir(out_dir, state):  # a second run into out_dir stops here, before any loading
                model_config, hub_kwargs = load_model_config(model)
                if dataset is None:
                    dataset = _load_split_for_model(
                        model_config, out_dir, dataset_name, data_root, split, dataset_kwargs
                    )
                # The tags (and the dataset's classes and ids) against the model's classes, before its weights load.
                check_split(dataset, model_config, use_image_labels=config.use_image_labels)
                loaded, processor = load_model(model, device=device, config=model_config, **hub_kwargs)
                summary = generate_pseudo_labels(
                    loaded, dataset, out_dir, config, image_processor=processor, dataset_name=dataset_name,
                    split=split, data_root=data_root,
                )  # fmt: skip
        except Interrupted as error:
            error.detail = f"the masks in {out_dir} are all complete; rerun the same command to resume."
            raise
    if state.is_main_process:
        if summary.report is not None:
            print(format_report(summary.report))
        print(summary.format_counts(out_dir))
    finish_distributed(state)
    return summary


def _load_split_for_model(model_config, out_dir, dataset_name, data_root, split, dataset_kwargs):
    """`load_split` for pseudo-labelling with a model: a tagged folder's tags name the model's classes (the label
    ids are the model's), and our own masks, if written inside the photo folder, are no untagged photos."""
    dataset_kwargs = dict(dataset_kwargs or {})
    if dataset_name == "tagged":
        dataset_kwargs.setdefault("class_names", model_config)
        layout = OutputLayout(Path(out_dir))
        ours = [out_dir, layout.bpm_dir, layout.crf_dir, layout.report_dir, report_files(out_dir)[1]]
        dataset_kwargs.setdefault("exclude", ours)  # thumbnails of report.html included
    return load_split(dataset_name, data_root, split, **dataset_kwargs)


__all__ = [
    "DEFAULT_CRF_MAX_SIDE",
    "Failure",
    "check_mask_paths",
    "check_split",
    "dataset_class_names",
    "distributed_state",
    "finish_distributed",
    "generate_pseudo_labels",
    "load_split",
    "prepare_resume",
    "pseudo_label_fingerprint",
    "remove_temporary_files",
    "resolve_inference_size",
    "progress_bar",
    "run_pseudo_labeling",
    "safe_file_id",
]
