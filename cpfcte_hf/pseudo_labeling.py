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
  fingerprint.json               what determines the masks (`cpfcte_hf.fingerprint`): other settings are refused
  sources.json                   per image, the content (file size and times, digest of the bytes) and tags its masks
                                 were made from: a changed image is recomputed (`cpfcte_hf.prediction.ContentRecord`)
  .cpfcte-hf.lock(.json)         while a run works: its lock and who holds it (`cpfcte_hf.prediction.hold_output_dir`)
  image_scores.jsonl             each image's image-level class scores (`cpfcte_hf.image_records`)
  report.html, report_assets/    every image with its masks, scores and accounting, to look at (`cpfcte_hf.html_report`)
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

import csv
import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .class_names import dataset_class_names, map_class_names, mapping_is_identity, names_of
from .cli import parse_key_values  # noqa: F401  (re-exported: scripts and stage 2 import it from here)
from .crf import DenseCRFConfig
from .data._common import loader_report
from .fingerprint import FINGERPRINT_FILE, weights_digest
from .html_report import REPORT_FILE, report_files, write_html_report
from .image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD, to_rgb_array
from .image_records import IMAGE_SCORES_FILE, ImageScoreLog, per_image_scores, write_per_image
from .inference import (
    DEFAULT_INFERENCE_SIZE,
    cap_image_side,
    check_image_size,
    multi_hot,
    predict_class_probabilities,
)
from .interrupts import Interrupted, stop_on_signals
from .metrics import IGNORE_INDEX, SegmentationMetric, confusion_matrix
from .prediction import (
    SOURCES_FILE,
    DatasetSources,
    Failure,
    JobCounts,
    create_output_dir,
    distributed_state,
    finish_distributed,
    gather_counts,
    hold_output_dir,
    job_threads,
    prepare_job_dir,
    progress_bar,
    remove_temporary_files,
    resolve_crf_workers,
    run_prediction_job,
    safe_file_id,
)
from .results import results_record, write_results
from .upsampling import check_crf_upsampling, predict_with_crf_input
from .visualization import (
    atomic_write_text,
    plot_per_class_iou,
    read_mask,
    save_overlay_panels,
)


logger = logging.getLogger(__name__)

# 2048 px: masks stay within 2x of a 12 MP photo's resolution, and a CRF worker peaks well under the 2 GB goal at
# 24 MP (README, Performance: CRF memory). VOC (500 px) and COCO (640 px) images are far below it: unchanged.
DEFAULT_CRF_MAX_SIDE = 2048

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass
class PseudoLabelConfig:
    """
    Settings of a pseudo-labelling run.

    Attributes:
        size: inference resolution (square side, a multiple of the patch size after rounding); `None` = the
            checkpoint's `config.inference_size` (960, as in ViT-PCM, for checkpoints that do not record one).
        scales: multipliers of `size`; the views' probability maps are averaged (`(1.0,)` = single scale).
        flip: also run the left-right flipped image and average.
        use_image_labels: mask absent classes with the image-level labels and max-normalise each class
            (training-set pseudo-labels). Off: every class competes (e.g. for images without tags).
        crf: refine with the dense CRF and write `crf/`.
        crf_config: CRF parameters (docs/method.md section 3).
        crf_upsampling: the geometry of the CRF's input (`upsampling`): `align_corners` (ours: the BPM's map) or
            `half_pixel` (ViT-PCM's: scikit-image's resize of the grid probabilities).
        crf_workers: CRF worker processes per process; `None` = the CPUs available divided by the number of
            processes; 0 = serial in the main process.
        crf_max_side: longest side, in pixels, at which the probability maps are upsampled and the CRF runs
            (`None` or 0: the image's own size). A larger image is downscaled to it first (antialiased) and its
            masks are upsampled back (nearest) and written at the original size. It bounds the memory of a CRF
            worker for phone photos; VOC (500 px) and COCO (640 px) images are below the default and unchanged.
        batch_size: images per model call.
        overwrite: recompute every mask (the old masks, report and summary are deleted first). Without it, an
            output directory made with other settings (`pseudo_label_fingerprint`) is refused.
        num_overlays: overlay panels written in the report.
        progress: show a tqdm bar (main process only).
        report_html: write `OUT/report.html` and its thumbnails (`cpfcte_hf.html_report`) at the end.
    """

    size: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    use_image_labels: bool = True
    crf: bool = True
    crf_config: DenseCRFConfig = field(default_factory=DenseCRFConfig)
    crf_upsampling: str = "align_corners"
    crf_workers: int | None = None
    crf_max_side: int | None = DEFAULT_CRF_MAX_SIDE
    batch_size: int = 1
    overwrite: bool = False
    num_overlays: int = 4
    progress: bool = True
    report_html: bool = True

    def __post_init__(self):
        if isinstance(self.crf_config, Mapping):
            self.crf_config = DenseCRFConfig(**self.crf_config)
        self.scales = tuple(float(s) for s in self.scales)
        if (self.size is not None and int(self.size) < 1) or not self.scales or min(self.scales) <= 0:
            raise ValueError(f"`size` must be >= 1 and `scales` positive, got size={self.size}, scales={self.scales}.")
        if int(self.batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        check_crf_upsampling(self.crf_upsampling)
        if self.crf_max_side is not None and int(self.crf_max_side) < 0:
            raise ValueError(f"`crf_max_side` must be >= 0 (0 or None: no cap), got {self.crf_max_side}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OutputLayout:
    """Where a run writes (see the module docstring)."""

    root: Path

    @property
    def bpm_dir(self) -> Path:
        return self.root / "bpm"

    @property
    def crf_dir(self) -> Path:
        return self.root / "crf"

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


# ----------------------------------------------------------------------------------------------------- inputs


def prepare_output_dir(path: str | os.PathLike, subdirectories: Sequence[str] = ()) -> Path:
    """
    Creates the output directory (and `subdirectories`) and checks it can be written
    (`cpfcte_hf.prediction.create_output_dir`).

    Raises:
        NotADirectoryError: `path` (or a parent) exists and is a file.
        PermissionError: it cannot be written.
    """
    root = Path(path)
    create_output_dir(root)
    for sub in subdirectories:
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def check_checkpoint_dir(directory: str | os.PathLike) -> None:
    """
    Checks that a local directory is a saved checkpoint: `config.json` and weights.

    Raises:
        FileNotFoundError: the message names the directory and what is missing.
    """
    name = os.fspath(directory)
    if not os.path.isfile(os.path.join(name, "config.json")):
        raise FileNotFoundError(f"Model directory {name!r} has no config.json: not a saved checkpoint.")
    if not any(os.path.isfile(os.path.join(name, f)) for f in WEIGHT_FILES):
        raise FileNotFoundError(
            f"Model directory {name!r} has no weights in it (looked for {', '.join(WEIGHT_FILES)}). "
            "Point --model at a directory written by `save_pretrained` / the trainer's best checkpoint."
        )


def looks_like_local_path(name: str) -> bool:
    """True for names that can only mean a directory: `./x`, `../x`, `/x`, `~/x`, `C:\\x`, `a/b/c` (a Hub id has at
    most one `/`), or any backslash."""
    return (
        name.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")
    )


def resolve_model_location(name: str, timeout: float = 10.0) -> dict:
    """
    Decides, quickly, whether `--model name` is a local checkpoint directory or a Hub model, and fails with "not
    found" before transformers' download retries (about 27 s without a network) when it is neither.

    Order: an existing directory is checked (`config.json`, weights); an existing file, or a name that looks like
    a path (`looks_like_local_path`) but does not exist, is an error; a name that is not a valid Hub id is "not
    found"; otherwise one request asks the Hub whether the model exists (none in offline mode, `HF_HUB_OFFLINE=1`).
    When the Hub cannot be reached, a model already in the local Hub cache is used from there.

    Returns:
        Extra keyword arguments for `from_pretrained` (`{"local_files_only": True}` for a cached model without a
        network, else `{}`).

    Raises:
        FileNotFoundError: not found as above, or the Hub cannot be reached and the model is not cached;
        NotADirectoryError: `name` is a file.
    """
    if os.path.isdir(name):
        check_checkpoint_dir(name)
        return {}
    if os.path.exists(name):
        raise NotADirectoryError(f"--model {name!r} is a file; give a checkpoint directory or a Hub id.")
    if looks_like_local_path(name):
        raise FileNotFoundError(f"Model directory {name!r} not found (resolved to {os.path.abspath(name)!r}).")

    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(f"Model {name!r} not found: no such directory, and not a valid Hub id.") from None
    if constants.HF_HUB_OFFLINE:
        return {}  # transformers looks in the cache only, and fails at once if the model is not there
    try:
        HfApi().model_info(name, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - no network, proxy, timeout: the cache may still have it
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, RepositoryNotFoundError) or status in (401, 404):
            raise FileNotFoundError(
                f"Model {name!r} not found: no directory of that name here (in {os.getcwd()!r}), and no Hub model "
                "of that name (or a private one: log in with `hf auth login`)."
            ) from None
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            logger.warning(f"The Hub cannot be reached ({type(error).__name__}); using the cached copy of {name!r}.")
            return {"local_files_only": True}
        raise FileNotFoundError(
            f"Model {name!r} not found: no directory of that name here (in {os.getcwd()!r}), and the Hub cannot be "
            f"reached to look it up ({type(error).__name__}: {error}). Check the path, or the network "
            "(HF_ENDPOINT, proxy)."
        ) from None
    return {}


def load_model_config(model_name_or_path: str | os.PathLike):
    """
    The checkpoint's config alone (`config.json`: classes, patch size, inference size), without its weights, and
    the keyword arguments `from_pretrained` needs for it (`resolve_model_location`): enough to check a dataset or
    a tags file against the model's classes before spending seconds on loading the weights.

    Raises:
        FileNotFoundError, NotADirectoryError: see `resolve_model_location`.
    """
    from transformers import AutoConfig

    name = os.path.expanduser(os.fspath(model_name_or_path))
    hub_kwargs = resolve_model_location(name)
    try:
        return AutoConfig.from_pretrained(name, **hub_kwargs), hub_kwargs
    except OSError as error:
        raise OSError(f"Could not read the model's config from {name!r}: {error}") from error


def load_model(
    model_name_or_path: str | os.PathLike, device: str | torch.device | None = None, config=None, **hub_kwargs
):
    """
    Loads a CPF-CTE checkpoint (a local directory or a Hub id) and its image processor, in eval mode.
    `resolve_model_location` decides which, before any download. `config`: the checkpoint's config if already
    read (`load_model_config`; then `hub_kwargs` should be the ones it returned).

    Raises:
        FileNotFoundError: a local directory that does not exist, or lacks `config.json` or weights (the message
            names the directory and the files looked for); a name that is no directory and no Hub model.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from .image_processing_cpfcte import CPFCTEImageProcessor

    name = os.path.expanduser(os.fspath(model_name_or_path))
    if config is None:
        config, located = load_model_config(name)
        hub_kwargs = {**located, **hub_kwargs}
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(name, config=config, **hub_kwargs)
    except OSError as error:
        raise OSError(f"Could not load a model from {name!r}: {error}") from error
    try:
        processor = AutoImageProcessor.from_pretrained(name, **hub_kwargs)
    except (OSError, ValueError) as error:
        logger.warning(f"No image processor in {name!r} ({error}); using CPFCTEImageProcessor defaults.")
        processor = CPFCTEImageProcessor()
    if device is not None:
        model = model.to(device)
    return model.eval(), processor


def load_split(dataset: str, data_root: str | os.PathLike | None = None, split: str = "train", **kwargs):
    """`cpfcte_hf.data.build_dataset(name=dataset, root=data_root, split=split, **kwargs)` (see `cpfcte_hf.data`)."""
    from .data import build_dataset

    return build_dataset(name=dataset, root=data_root, split=split, **kwargs)


def _check_single_split(dataset) -> None:
    if isinstance(dataset, Mapping) or not hasattr(dataset, "column_names"):
        raise ValueError(
            f"Expected one split (a datasets.Dataset), got {type(dataset).__name__}"
            + (f" with splits {list(dataset)}" if isinstance(dataset, Mapping) else "")
            + ": pass a single --split."
        )


def check_mask_paths(ids: Sequence[str]) -> None:
    """Refuses, before anything is written, two ids whose masks would be the same file (`a/b` and `A/b` on a
    case-insensitive file system count as the same), naming both."""
    seen: dict[str, str] = {}
    for image_id in ids:
        key = os.path.normcase(str(image_id)).casefold()
        if key in seen:
            raise ValueError(
                f"Images {seen[key]!r} and {image_id!r} would write the same mask file ({image_id}.png on a "
                "case-insensitive file system); rename one of them."
            )
        seen[key] = str(image_id)


# ------------------------------------------------------------------------------ resume, fingerprint, memory


def resolve_inference_size(size: int | None, model_config) -> int:
    """`size` if given, else the checkpoint's `config.inference_size`, else (older checkpoints) 960 with a log line."""
    if size is not None:
        return int(size)
    recorded = getattr(model_config, "inference_size", None)
    if recorded:
        return int(recorded)
    logger.warning(
        f"The checkpoint records no `inference_size` (saved before the field existed): inference at "
        f"{DEFAULT_INFERENCE_SIZE} px. Pass --size to choose (about 2x the training resolution works well)."
    )
    return DEFAULT_INFERENCE_SIZE


def pseudo_label_fingerprint(
    model, config: PseudoLabelConfig, size: int, class_names, use_labels, mean, std, class_mapping=None
) -> dict:
    """
    Everything that determines the masks of a run (`cpfcte_hf.fingerprint`): the model's weights (digest of the
    tensors) and classes, the dataset's class names and their mapping onto the model's, the normalisation, the
    inference size/scales/flip, label masking, the CRF and its parameters, and `crf_max_side`. Worker counts,
    batch size and progress do not change a mask and are left out.
    """
    return {
        "kind": "cpfcte_hf pseudo-labels",
        "model_weights": weights_digest(model),
        "id2label": {str(i): str(name) for i, name in sorted(model.config.id2label.items())},
        "dataset_class_names": [str(name) for name in class_names],
        "class_mapping": None if class_mapping is None else [int(i) for i in class_mapping],
        "image_mean": [float(v) for v in mean],
        "image_std": [float(v) for v in std],
        "size": int(size),
        "scales": [float(s) for s in config.scales],
        "flip": bool(config.flip),
        "use_image_labels": bool(use_labels),
        "crf": config.crf_config.to_dict() if config.crf else None,
        "crf_max_side": int(config.crf_max_side or 0),
        # Only when not the default, so that pseudo-labels made before the option existed keep their fingerprint.
        **(
            {"crf_upsampling": config.crf_upsampling}
            if config.crf and config.crf_upsampling != "align_corners"
            else {}
        ),
    }


def prepare_resume(layout: OutputLayout, fingerprint: dict, overwrite: bool, state=None) -> str:
    """
    Start of a run in `layout.root`: refuses a directory made with other settings (naming what changed), clears
    it with `overwrite`, records the fingerprint, removes temporary files left by a killed run and the summary of
    the previous run (the new one is written at the end and describes only masks this run made or verified).
    Images whose bytes or tags changed since their masks were made are found by the job (`sources.json`,
    `cpfcte_hf.prediction.sort_out_shard`).

    Returns:
        "new", "same" (resume) or "overwrite".

    Raises:
        FingerprintMismatch (a ValueError): other settings, or masks without a record, and no `overwrite`.
    """

    def before_record() -> None:
        layout.summary_path.unlink(missing_ok=True)
        layout.report_html.unlink(missing_ok=True)  # like the summary: rewritten at the end, for this run
        (layout.root / "image_labels.json").unlink(missing_ok=True)  # the per-image tags of older versions
        for folder in (layout.bpm_dir, layout.crf_dir) if fingerprint["crf"] else (layout.bpm_dir,):
            folder.mkdir(parents=True, exist_ok=True)

    return prepare_job_dir(
        layout.root,
        fingerprint,
        overwrite,
        (layout.bpm_dir, layout.crf_dir),
        state,
        clear=(layout.report_dir, layout.image_scores, *report_files(layout.root)),
        before_record=before_record,
    )


def _image_labels(dataset, class_mapping, ids, use_labels) -> dict[str, list[int]] | None:
    """`{id: sorted model class ids}` that label masking restricts each image to (`None` without masking; dataset
    class i is model class `class_mapping[i]`, the same id when `None`); rows with unusable labels are left out
    (they fail later, with their reason)."""
    if not use_labels:
        return None
    result = {}
    for image_id, labels in zip(ids, dataset["labels"]):
        try:
            result[image_id] = sorted(
                {0, *(int(c if class_mapping is None else class_mapping[int(c)]) for c in labels or [])}
            )
        except (IndexError, TypeError, ValueError):
            continue
    return result


# ------------------------------------------------------------------------------------------------- generation


@dataclass
class SplitCheck:
    """What `check_split` found: the dataset's class names and their model ids, the image ids, label masking."""

    dataset_names: list[str]
    class_mapping: list[int]
    ids: list[str]
    use_labels: bool


def check_split(dataset, model_config, class_names: Sequence[str] | None = None, use_image_labels: bool = True):
    """
    Everything about a split that can be checked with the model's config alone (before its weights are loaded and
    before anything is written): one split, `image` and `id` columns, unique ids that are usable file names and
    distinct on a case-insensitive file system, and the dataset's classes mapped onto the model's by name (a
    class the model lacks is a `ValueError` saying what to do). Returns a `SplitCheck`.
    """
    _check_single_split(dataset)
    dataset_names = (
        list(class_names) if class_names is not None else dataset_class_names(dataset, model_config.id2label)
    )
    # Class identity is by name: dataset class i is model class class_mapping[i] (refused if the model lacks it).
    class_mapping = map_class_names(dataset_names, names_of(model_config), source="the dataset")
    if not mapping_is_identity(class_mapping) or len(dataset_names) != model_config.num_labels:
        logger.info(f"Dataset classes mapped onto the model's by name: {dict(zip(dataset_names, class_mapping))}.")
    columns = set(dataset.column_names)
    for required in ("image", "id"):
        if required not in columns:
            raise ValueError(f"The dataset needs an {required!r} column; it has {sorted(columns)}.")
    use_labels = use_image_labels and "labels" in columns
    ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]  # one read, not one per row
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise ValueError(f"Image ids must be unique (they are file names); repeated: {sorted(duplicates)[:10]}.")
    check_mask_paths(ids)
    return SplitCheck(dataset_names, class_mapping, ids, use_labels)


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
            `OutputDirInUse` error (`cpfcte_hf.prediction.hold_output_dir`).
        config: `PseudoLabelConfig`.
        image_processor: supplies `image_mean` / `image_std` (ViT-PCM's 0.5 / 0.5 if `None`).
        class_names: the dataset's class names (default: its ClassLabel names, else the model's id2label). They
            are mapped onto the model's `id2label` by name (`cpfcte_hf.class_names.map_class_names`: case and
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
    with hold_output_dir(out_dir, state), job_threads(state):
        layout = OutputLayout(Path(out_dir))
        mean = getattr(image_processor, "image_mean", None) or VIT_PCM_MEAN
        std = getattr(image_processor, "image_std", None) or VIT_PCM_STD
        size = resolve_inference_size(config.size, model.config)
        fingerprint = pseudo_label_fingerprint(
            model, config, size, checked.dataset_names, checked.use_labels, mean, std, checked.class_mapping
        )
        prepare_resume(layout, fingerprint, config.overwrite, state)
        score_log = ImageScoreLog(layout.root)
        read, predict = _pseudo_label_functions(model, dataset, checked, config, size, mean, std, score_log)
        crf_workers = resolve_crf_workers(config.crf_workers, state)
        counts = run_prediction_job(
            checked.ids,
            read,
            predict,
            layout.bpm_dir,
            layout.crf_dir if config.crf else None,
            config.crf_config,
            crf_workers,
            batch_size=config.batch_size,
            overwrite=config.overwrite,
            progress=config.progress,
            desc="pseudo-labels",
            state=state,
            sources=DatasetSources(dataset),
            inputs=_image_labels(dataset, checked.class_mapping, checked.ids, checked.use_labels),
            record_dir=layout.root,
        )
        summary = PseudoLabelSummary.from_job(gather_counts(state, counts), dataset, time.perf_counter() - started)
        if evaluate is None:
            evaluate = "mask" in dataset.column_names
        if evaluate:
            summary.report = _evaluate_run(
                model, dataset, layout, config, checked, size, dataset_name, split, data_root
            )
        if state is None or state.is_main_process:
            _write_summary(layout, summary, model, config, checked, size, crf_workers, dataset_name, split, state)
        if config.report_html:
            summary.report_html = write_report_page(layout.root, dataset, state, config.progress)
    return summary


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


def _write_summary(layout, summary, model, config, checked: SplitCheck, size, crf_workers, dataset_name, split, state):
    """`summary.json` (atomically): the counts, the failures and the settings of the run."""
    payload = {
        **summary.to_dict(),
        "dataset": dataset_name,
        "split": split,
        "model": getattr(model.config, "_name_or_path", None),
        "num_processes": state.num_processes if state is not None else 1,
        "crf_workers_per_process": crf_workers if config.crf else 0,
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


def write_report_page(out_dir: str | os.PathLike, dataset, state=None, progress: bool = False) -> str | None:
    """`OUT/report.html` of a finished job (`html_report.write_html_report`), once its summary is on disk. A page
    that cannot be written (a full disk, a record it cannot read) is a warning: the masks are what the run is for.
    Returns the page's path on the main process when written."""
    if state is not None:
        state.wait_for_everyone()  # the main process wrote the summary the page is built from
    try:
        path = write_html_report(out_dir, dataset, state=state, progress=progress)
    except (OSError, ValueError) as error:
        logger.warning(f"{Path(out_dir) / REPORT_FILE} not written: {type(error).__name__}: {error}")
        return None
    return None if path is None else str(path)


# ------------------------------------------------------------------------------------------------- evaluation


def evaluate_predictions(
    dataset,
    predictions: Mapping[str, str | os.PathLike],
    report_dir: str | os.PathLike | None,
    class_names: Sequence[str] | None = None,
    num_overlays: int = 4,
    dataset_name: str | None = None,
    split: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = True,
    class_mapping: Sequence[int] | None = None,
    **record,
) -> dict:
    """
    Scores directories of mask PNGs (`<dir>/<id>.png`, class ids, e.g. from `generate_pseudo_labels`, stage 2, or
    any other method) against the dataset's `mask` column, over the whole split.

    Args:
        dataset: a `datasets.Dataset` with `id` and `mask` columns (and `image` for the overlays).
        predictions: `{name: directory}`, e.g. `{"BPM": out/"bpm", "CRF": out/"crf"}`.
        report_dir: where to write `metrics.json`, `per_class_iou.csv`, `per_class_iou.png`, `per_image.json`
            (each image's mIoU per set, `cpfcte_hf.image_records`), `overlays/` (`None`: compute only).
        class_names: the C class names of the predictions (default: the dataset's ClassLabel names).
        class_mapping: `class_mapping[dataset class id]` = the id of that class in `class_names`, for ground truth
            whose class list differs from the predictions' (see `cpfcte_hf.class_names.map_class_names`).
        record: what else the results record says (`stage`, `model`, `data_root`, `settings`, `command`: see
            `results.results_record`; the stage defaults to "evaluation").

    Returns:
        The content of `metrics.json` (the schema of `results.py`): per prediction set the mIoU, pixel accuracy,
        per-class IoU, and how many images were scored, had no prediction file (`missing`) or could not be scored
        (`failed`, with reasons).
        Under several processes each scores its share and the confusion matrices are summed.
    """
    _check_single_split(dataset)
    names = list(class_names) if class_names is not None else dataset_class_names(dataset)
    num_labels = len(names)
    if "mask" not in dataset.column_names:
        raise ValueError("The dataset has no `mask` column: there is no ground truth to evaluate against.")
    predictions = {str(name): Path(directory) for name, directory in predictions.items()}
    for name, directory in predictions.items():
        if not directory.is_dir():
            raise NotADirectoryError(
                f"Prediction directory {str(directory)!r} ({name}) does not exist or is not a directory."
            )

    lookup = None
    if class_mapping is not None and not mapping_is_identity(class_mapping):
        lookup = np.full(256, ignore_index, np.uint8)  # ids the dataset does not name are ignored
        lookup[: len(class_mapping)] = class_mapping
        lookup[ignore_index] = ignore_index
    state = distributed_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    metrics = {name: SegmentationMetric(num_labels, ignore_index) for name in predictions}
    missing = {name: [] for name in predictions}
    failed: dict[str, list[dict]] = {name: [] for name in predictions}
    gt_failed: list[dict] = []

    per_image: dict[str, dict] = {}  # each image's own scores (`image_records.per_image_scores`), for the report
    masks_only = dataset.select_columns([c for c in ("id", "mask") if c in dataset.column_names])
    indices = list(range(rank, len(dataset), world))
    progress = progress_bar(len(indices), 0, enabled=progress and rank == 0, desc="evaluate")
    for index in indices:
        row = masks_only[index]
        image_id = str(row["id"])
        progress.update(1)
        if row["mask"] is None:
            gt_failed.append({"id": image_id, "error": "no ground-truth mask"})
            continue
        try:
            reference = _mask_array(row["mask"])
            if lookup is not None:
                reference = lookup[reference]
        except Exception as error:  # noqa: BLE001
            gt_failed.append({"id": image_id, "error": f"{type(error).__name__}: {error}"})
            continue
        image = per_image[image_id] = {"gt_classes": [], "mean_iou": {}, "errors": {}}
        for name, directory in predictions.items():
            path = directory / f"{image_id}.png"
            if not path.is_file():
                missing[name].append(image_id)
                continue
            try:
                matrix = confusion_matrix(read_mask(path), reference, num_labels, ignore_index)
            except Exception as error:  # noqa: BLE001 - a bad file is reported, the rest is scored
                failed[name].append({"id": image_id, "error": f"{path}: {error}"})
                image["errors"][name] = str(error)
                continue
            metrics[name].add_confusion_matrix(matrix)
            image["mean_iou"][name], image["gt_classes"] = per_image_scores(matrix)
    progress.close()

    if state is not None:
        from accelerate.utils import gather_object

        for metric in metrics.values():
            metric.all_reduce(state.device)
        gathered = gather_object([(missing, failed, gt_failed, per_image)])
        missing = {n: sorted(i for m, *_ in gathered for i in m[n]) for n in predictions}
        failed = {n: [f for _, fl, *_ in gathered for f in fl[n]] for n in predictions}
        gt_failed = [g for _, _, gl, _ in gathered for g in gl]
        per_image = {image_id: entry for *_, images in gathered for image_id, entry in images.items()}

    report = results_record(
        record.pop("stage", "evaluation"),
        {},
        names,
        dataset=dataset_name,
        split=split,
        num_images=len(dataset),
        ground_truth_unreadable=gt_failed,
        **record,
    )
    report["ignore_index"] = ignore_index
    for name, metric in metrics.items():
        scores = metric.compute()
        report["predictions"][name] = {
            "directory": str(predictions[name]),
            "mean_iou": _finite(scores.mean_iou),
            "pixel_accuracy": _finite(scores.pixel_accuracy),
            "mean_accuracy": _finite(scores.mean_accuracy),
            "num_scored": scores.num_images,
            "num_missing": len(missing[name]),
            "num_failed": len(failed[name]),
            "missing_ids": missing[name][:50],
            "failures": failed[name][:50],
            "per_class": scores.per_class_table(names),
        }
        if missing[name] or failed[name]:
            logger.warning(
                f"{name}: {len(missing[name])} image(s) without a prediction in {predictions[name]}, "
                f"{len(failed[name])} unreadable or of the wrong size; scored {scores.num_images}."
            )

    if rank == 0 and report_dir is not None:
        write_report(report, report_dir)
        write_per_image(report_dir, per_image, names, list(predictions))
        if num_overlays > 0 and "image" in dataset.column_names:
            _write_overlays(dataset, predictions, Path(report_dir) / "overlays", names, num_overlays)
    return report


def _mask_array(mask) -> np.ndarray:
    if hasattr(mask, "mode"):  # PIL: palette and grey PNGs hold the class ids
        if mask.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"ground-truth mask has mode {mask.mode!r}, not class ids")
        return np.asarray(mask).astype(np.uint8)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"ground-truth mask has shape {array.shape}, expected (H, W)")
    return array


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def write_report(report: dict, report_dir: str | os.PathLike) -> None:
    """Writes `metrics.json`, `per_class_iou.csv` and `per_class_iou.png` (each atomically) for `report`."""
    report_dir = prepare_output_dir(report_dir)
    write_results(report, report_dir)
    atomic_write_text(report_dir / "per_class_iou.csv", report_csv(report))
    names = report["class_names"]
    series = {name: [row["iou"] for row in entry["per_class"]] for name, entry in report["predictions"].items()}
    title = " ".join(str(v) for v in (report.get("dataset"), report.get("split")) if v) or None
    plot_per_class_iou(report_dir / "per_class_iou.png", series, names, title=title)


def report_csv(report: dict) -> str:
    """Per-class table: `class_id,class_name,gt_pixels,<set>_iou...` and a final `mean` row (IoU in [0, 1])."""
    sets = list(report["predictions"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_id", "class_name", "gt_pixels", *[f"{s}_iou" for s in sets]])
    first = report["predictions"][sets[0]]["per_class"] if sets else []
    for i, name in enumerate(report["class_names"]):
        values = [report["predictions"][s]["per_class"][i]["iou"] for s in sets]
        gt_pixels = first[i]["gt_pixels"] if first else ""
        writer.writerow([i, name, gt_pixels, *["" if v is None else f"{v:.6f}" for v in values]])
    means = [report["predictions"][s]["mean_iou"] for s in sets]
    writer.writerow(["", "mean", "", *["" if v is None else f"{v:.6f}" for v in means]])
    return buffer.getvalue()


def format_report(report: dict) -> str:
    """The per-class table as text (IoU in %), for the console."""
    sets = list(report["predictions"])
    width = max([len(n) for n in report["class_names"]] + [10])
    lines = [f"{'class':<{width}} " + " ".join(f"{s:>8}" for s in sets)]
    for i, name in enumerate(report["class_names"]):
        cells = []
        for s in sets:
            value = report["predictions"][s]["per_class"][i]["iou"]
            cells.append(f"{'-':>8}" if value is None else f"{100 * value:8.2f}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    cells = []
    for s in sets:
        value = report["predictions"][s]["mean_iou"]
        cells.append(f"{'-':>8}" if value is None else f"{100 * value:8.2f}")
    lines.append(f"{'mIoU':<{width}} " + " ".join(cells))
    for s in sets:
        entry = report["predictions"][s]
        lines.append(
            f"{s}: scored {entry['num_scored']} image(s), missing {entry['num_missing']}, failed {entry['num_failed']}"
        )
    return "\n".join(lines)


def _write_overlays(dataset, predictions, directory: Path, class_names, count: int) -> None:
    written = 0
    for index in range(len(dataset)):
        if written >= count:
            break
        row = dataset[index]
        if row.get("mask") is None:
            continue
        image_id = str(row["id"])
        try:
            image = to_rgb_array(row["image"])
            panels = {"ground truth": _mask_array(row["mask"])}
            for name, folder in predictions.items():
                path = Path(folder) / f"{image_id}.png"
                panels[name] = read_mask(path) if path.is_file() else None
            save_overlay_panels(directory / f"{image_id}.png", image, panels, class_names, title=image_id, alpha=0.6)
            written += 1
        except Exception as error:  # noqa: BLE001 - an overlay is a nicety, never a reason to fail the report
            logger.warning(f"[{image_id}] overlay not written: {error}")


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
    and the counts. SIGINT and SIGTERM raise `cpfcte_hf.interrupts.Interrupted` (its `exit_code` is 130 / 143)
    after the CRF workers are stopped and temporary files removed: the output directory is left resumable.
    """
    config = config or PseudoLabelConfig()
    state = distributed_state()
    if device is None:
        device = state.device if state is not None else ("cuda" if torch.cuda.is_available() else "cpu")
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
    if state is None or state.is_main_process:
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


def run_evaluation(
    predictions: Sequence[str | os.PathLike],
    dataset=None,
    dataset_name: str | None = None,
    data_root: str | os.PathLike | None = None,
    split: str = "val",
    report_dir: str | os.PathLike | None = None,
    num_overlays: int = 4,
    dataset_kwargs: dict | None = None,
    report_html: bool = True,
) -> dict:
    """
    `scripts/evaluate.py` in one call: scores each prediction directory (named by its folder name) against the
    split and writes the report to `report_dir` (default: `<first prediction dir>/report`), with `report.html`
    unless `report_html` is False. One run at a time holds `report_dir` (`cpfcte_hf.prediction.hold_output_dir`).
    """
    directories = [Path(p) for p in predictions]
    named = {}
    for directory in directories:
        name = directory.name or str(directory)
        while name in named:
            name = f"{directory.parent.name}/{name}"
        named[name] = directory
    check_prediction_dirs(directories)
    report_dir = Path(report_dir) if report_dir is not None else directories[0] / "report"
    state = distributed_state()
    with hold_output_dir(report_dir, state):  # a failed start (e.g. the data) leaves no report directory
        if dataset is None:
            dataset = load_split(dataset_name, data_root, split, **(dataset_kwargs or {}))
        report = evaluate_predictions(
            dataset,
            named,
            report_dir,
            num_overlays=num_overlays,
            dataset_name=dataset_name,
            split=split,
            data_root=data_root,
        )
        page = write_report_page(report_dir, dataset, state) if report_html else None
    if state is None or state.is_main_process:
        print(format_report(report))
        print(f"Report in {report_dir}")
        if page:
            print(f"Every image and its masks, to look at: {page}")
    finish_distributed(state)
    return report


def check_prediction_dirs(directories: Sequence[str | os.PathLike]) -> None:
    """Raises before anything is written if a prediction directory is missing, not a directory, or holds no mask.

    Raises:
        FileNotFoundError: a directory does not exist (a typo must not create `typo/report` and "score 0").
        NotADirectoryError: it is a file.
        ValueError: it holds no `.png` file at any depth.
    """
    for directory in map(Path, directories):
        if not directory.exists():
            raise FileNotFoundError(f"Prediction directory {str(directory)!r} not found.")
        if not directory.is_dir():
            raise NotADirectoryError(f"Prediction directory {str(directory)!r} is not a directory.")
        if next(iter(p for p in directory.rglob("*.png") if not p.name.startswith(".")), None) is None:
            raise ValueError(f"Prediction directory {str(directory)!r} holds no mask (.png) files.")


__all__ = [
    "DEFAULT_CRF_MAX_SIDE",
    "Failure",
    "SplitCheck",
    "check_mask_paths",
    "check_prediction_dirs",
    "check_split",
    "OutputLayout",
    "PseudoLabelConfig",
    "PseudoLabelSummary",
    "check_checkpoint_dir",
    "dataset_class_names",
    "distributed_state",
    "evaluate_predictions",
    "finish_distributed",
    "format_report",
    "generate_pseudo_labels",
    "load_model",
    "load_model_config",
    "load_split",
    "looks_like_local_path",
    "prepare_output_dir",
    "prepare_resume",
    "pseudo_label_fingerprint",
    "remove_temporary_files",
    "resolve_inference_size",
    "resolve_model_location",
    "progress_bar",
    "report_csv",
    "run_evaluation",
    "run_pseudo_labeling",
    "safe_file_id",
    "write_report",
]
