# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's prediction job: multi-scale (+ flip) probabilities of a segmentation model, fused by max and refined by
the dense CRF (`MultiScaleEvalConfig`), written for a whole split through the shared prediction job
(`predict_split`: fingerprint, resume, accounting) and scored against its ground truth.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..evaluation.html_report import report_files
from ..evaluation.report import evaluate_predictions, write_report_page
from ..evaluation.results import read_json
from ..models.cpfcte.image_processing_cpfcte import to_rgb_array
from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation
from ..models.deeplab_v2.processing import IMAGENET_MEAN, IMAGENET_STD
from ..models.segmenters import DEEPLAB_MODEL_TYPE, segmenter_architecture
from ..utils.distributed import job_crf_workers, job_threads
from ..utils.fingerprint import FINGERPRINT_FILE, weights_digest
from ..utils.io import atomic_write_text
from ..utils.output_dir import hold_output_dir
from .config import (
    MULTI_SCALE,
    MultiScaleEvalConfig,
)
from .fusion import fused_probabilities
from .job import JobCounts, distributed_state, gather_counts, prepare_job_dir, require_columns, run_prediction_job
from .outputs import OutputLayout, PseudoLabelSummary, run_origin
from .sources import SOURCES_FILE, DatasetSources


def multi_scale_probabilities(
    model: DeepLabV2ForSemanticSegmentation,
    image: np.ndarray,
    scales: Sequence[float] = MULTI_SCALE,
    flip: bool = False,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    fusion: str = "image",
) -> torch.Tensor:
    """
    Class probabilities `(C, H, W)` (float32, CPU) of one `(H, W, 3)` uint8 image by DeepLab-v2's multi-scale
    inference with its recipe's defaults: scales `MULTI_SCALE`, ImageNet statistics; `fusion` where the scales are
    fused (`prediction.fusion`: `image`, ours, or `logits`, kazuto1011's).
    """
    return fused_probabilities(model, image, scales, flip, image_mean, image_std, fusion)


def _image_statistics(image_processor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = getattr(image_processor, "image_mean", None) or IMAGENET_MEAN
    std = getattr(image_processor, "image_std", None) or IMAGENET_STD
    return tuple(mean), tuple(std)


# The training run's progress that a stage-2 results file records (`stage2_model_info`).
TRAINER_STATE_KEYS = ("global_step", "epoch", "max_steps", "num_train_epochs")


def stage2_model_info(model: DeepLabV2ForSemanticSegmentation, model_dir: str | os.PathLike | None = None) -> dict:
    """
    What a stage-2 results file records about the model it scored (`model_info` of the results schema, which the
    model card renders): the architecture (its config) and the parameter count; when `model_dir` holds the files its
    training wrote, the arguments of that run (`run_args.json`) and how far it went (`trainer_state.json`: optimizer
    steps and epochs done, and their limits). Without them, `run_args` and `trainer_state` are None.
    """
    config = model.config
    if config.model_type != DEEPLAB_MODEL_TYPE:
        architecture = segmenter_architecture(model)
    else:
        architecture = _deeplab_architecture(config)
    folder = Path(model_dir) if model_dir is not None else None
    run_args = trainer_state = None
    if folder is not None and folder.is_dir():
        run_args = read_json(folder / "run_args.json", missing_ok=True)
        progress = read_json(folder / "trainer_state.json", missing_ok=True)
        trainer_state = None if progress is None else {key: progress.get(key) for key in TRAINER_STATE_KEYS}
    return {
        "architecture": architecture,
        "num_parameters": model.num_parameters(),
        "run_args": run_args,
        "trainer_state": trainer_state,
    }


def _deeplab_architecture(config) -> dict:
    backbone = config.backbone_config
    return {
        "backbone": backbone.model_type,
        "layer_type": backbone.layer_type,
        "depths": list(backbone.depths),
        "hidden_sizes": list(backbone.hidden_sizes),
        "embedding_size": backbone.embedding_size,
        "output_stride": config.output_stride,
        "atrous_rates": list(config.atrous_rates),
        "freeze_batch_norm": bool(config.freeze_batch_norm),
    }


def stage_two_fingerprint(model, config: MultiScaleEvalConfig, mean, std) -> dict:
    """Everything that determines stage 2's masks (`cpfcte_hf.utils.fingerprint`): weights, classes, normalisation,
    scales, flip, the CRF. Worker counts and progress do not change a mask and are left out."""
    return {
        "kind": "cpfcte_hf stage-2 predictions",
        "model_weights": weights_digest(model),
        "id2label": {str(i): str(name) for i, name in sorted(model.config.id2label.items())},
        "align_corners": bool(getattr(model.config, "align_corners", False)),
        "image_mean": [float(v) for v in mean],
        "image_std": [float(v) for v in std],
        "scales": [float(s) for s in config.scales],
        "flip": bool(config.flip),
        "crf": config.crf_config.to_dict() if config.crf else None,
        # Only when not the default, so that masks made before the option existed keep their fingerprint.
        **({"fusion": config.fusion} if config.fusion != "image" else {}),
    }


def predict_split(
    model: DeepLabV2ForSemanticSegmentation,
    dataset,
    out_dir: str | os.PathLike,
    config: MultiScaleEvalConfig | None = None,
    image_processor=None,
    dataset_name: str | None = None,
    split: str | None = None,
    model_info: dict | None = None,
    data_root: str | os.PathLike | None = None,
) -> dict:
    """
    Segments every image of `dataset` (columns `image`, `id`, optional `mask`) into `out_dir/ms/<id>.png`
    (multi-scale argmax) and, with `config.crf`, `out_dir/ms_crf/<id>.png`; when the dataset has ground truth,
    scores them with `evaluate_predictions` into `out_dir/report/`, which records `model_info` (what the model is and
    how it was trained, `stage2_model_info`; by default its architecture only). `dataset_name`, `split` and `data_root`
    are recorded in `out_dir/summary.json` (where the images are, for `cpfcte-hf export`).

    Under several processes each takes every N-th image and the report is written once. One run at a time holds
    `out_dir` (`cpfcte_hf.prediction.job.hold_output_dir`). Existing masks are kept (a killed run resumes) when they were
    made with the same model weights and settings (`fingerprint.json`) from the same image (`sources.json`: an
    image whose bytes changed is recomputed and counted in `changed`); other settings raise `FingerprintMismatch`
    naming what changed, unless `config.overwrite` (the old masks are deleted).

    Returns:
        `{"written", "changed", "already_done", "failed": [(id, reason)], "written_per_process", "report": dict |
        None, "report_html": path | None}`, all over the whole split (every process's counts gathered; `changed`
        lists ids); the counts are also in `out_dir/summary.json`.
    """
    started = time.perf_counter()
    config = config or MultiScaleEvalConfig()
    require_columns(dataset, ("image", "id"))
    state = distributed_state()
    mean, std = _image_statistics(image_processor)
    model.eval()
    out_dir = Path(out_dir)
    with hold_output_dir(out_dir, state), job_threads(state, job_crf_workers(config, state)):
        _prepare_stage_two_dir(out_dir, stage_two_fingerprint(model, config, mean, std), config.overwrite, state)
        counts = run_prediction_job(**_stage_two_job(model, dataset, out_dir, config, mean, std, state))
        counts = gather_counts(state, counts)  # every process's counts: the whole split is accounted for
        report = _score_split(model, dataset, out_dir, config, dataset_name, split, model_info)
        summary = PseudoLabelSummary.from_job(counts, dataset, time.perf_counter() - started)
        if state.is_main_process:
            _write_stage_two_summary(out_dir, summary, model, config, dataset_name, split, state, data_root)
        report_html = write_report_page(out_dir, dataset, state, config.progress) if config.report_html else None
    return _split_result(counts, report, report_html)


def _stage_two_job(model, dataset, out_dir: Path, config: MultiScaleEvalConfig, mean, std, state) -> dict:
    """The arguments of stage 2's `run_prediction_job`: multi-scale masks of every image in `ms/`, refined by the
    CRF in `ms_crf/`."""
    images = dataset.select_columns(["image", "id"])

    def read(index: int):
        return to_rgb_array(images[index]["image"]), None, None

    def predict(items):
        return [
            multi_scale_probabilities(model, rgb, config.scales, config.flip, mean, std, config.fusion)
            for rgb, _ in items
        ]

    ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]  # one read, not one per row
    return dict(
        ids=ids, read=read, predict=predict, mask_dir=out_dir / "ms", crf_dir=out_dir / "ms_crf" if config.crf else None,
        crf_config=config.crf_config, crf_workers=config.crf_workers, overwrite=config.overwrite,
        progress=config.progress, desc="deeplab predict", state=state, sources=DatasetSources(dataset),
        record_dir=out_dir,
    )  # fmt: skip


def _split_result(counts: JobCounts, report: dict | None, report_html: str | None) -> dict:
    """What `predict_split` returns: the counts over the whole split, the report and the page."""
    return {
        "written": counts.written,
        "changed": list(counts.changed),
        "already_done": counts.already_done,
        "failed": [(failure.id, f"{failure.stage}: {failure.error}") for failure in counts.failures],
        "written_per_process": counts.written_per_process,
        "report": report,
        "report_html": report_html,
    }


def _prepare_stage_two_dir(out_dir: Path, fingerprint: dict, overwrite: bool, state) -> None:
    """`prepare_job_dir` for stage 2: the summary and the page describe the last run, rewritten at its end."""
    layout = OutputLayout(out_dir)

    def before_record() -> None:
        layout.summary_path.unlink(missing_ok=True)
        layout.report_html.unlink(missing_ok=True)

    prepare_job_dir(
        out_dir,
        fingerprint,
        overwrite,
        [out_dir / "ms", out_dir / "ms_crf"],
        state,
        clear=[layout.report_dir, *report_files(out_dir)],
        before_record=before_record,
    )


def _write_stage_two_summary(
    out_dir: Path, summary, model, config: MultiScaleEvalConfig, dataset_name, split, state, data_root=None
):
    """`out_dir/summary.json` (atomically): the counts (changed included), failures and settings of the run."""
    record = {
        **summary.to_dict(),
        "stage": "stage2",
        **run_origin(model, dataset_name, split, data_root, state),
        "config": asdict(config),
        "class_names": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "fingerprint": FINGERPRINT_FILE,
        "sources": SOURCES_FILE,
        "prediction_sets": {"MS": "ms", **({"MS+CRF": "ms_crf"} if config.crf else {})},
    }
    atomic_write_text(OutputLayout(out_dir).summary_path, json.dumps(record, indent=2) + "\n")


def _score_split(model, dataset, out_dir: Path, config: MultiScaleEvalConfig, dataset_name, split, model_info):
    """Stage 2's report (`evaluate_predictions` of MS and MS+CRF) when the split has ground truth, else `None`."""
    if "mask" not in dataset.column_names:
        return None
    predictions = {"MS": out_dir / "ms"}
    if config.crf:
        predictions["MS+CRF"] = out_dir / "ms_crf"
    return evaluate_predictions(
        dataset,
        predictions,
        out_dir / "report",
        class_names=[model.config.id2label[i] for i in range(model.config.num_labels)],
        num_overlays=config.num_overlays,
        dataset_name=dataset_name,
        split=split,
        stage="stage2",
        model=getattr(model.config, "_name_or_path", None),
        settings=asdict(config),
        model_info=model_info if model_info is not None else stage2_model_info(model),
    )
