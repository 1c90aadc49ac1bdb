# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training and evaluating DeepLab-v2 on CPF-CTE's pseudo-labels (stage 2; docs/method.md section 4).

Training reads image + pseudo-label pairs: the images of a dataset split (`cpfcte_hf.data`, through
`pseudo_labeling.load_split`) and the masks `scripts/pseudo_label.py` wrote for it (`<out>/crf/<id>.png`, class
ids, 255 = ignore). Each sample is randomly rescaled (0.5-1.5), padded (image with the mean colour, labels with
255) and cropped to 321x321, and flipped left-right with probability 0.5. `DeepLabV2Trainer` is a
`transformers.Trainer` with the DeepLab-v2 recipe: SGD with momentum 0.9 and weight decay 5e-4, learning rate
2.5e-4 for the backbone and 10x for the ASPP classifier, poly decay `(1 - step / max_steps) ** 0.9`, batch 10,
20k steps. It resumes from its checkpoints (`Trainer.train(resume_from_checkpoint=...)`), also under
`accelerate launch`. kazuto1011/deeplab-pytorch's own recipe is two switches away: `multi_scale_loss` (its MSC
training loss, `multi_scale_training_loss`) and `lr_groups="deeplab_v2"` (its Caffe learning-rate groups).

Test-time inference (`multi_scale_probabilities`) runs the image at scales 1.0, 0.75 and 0.5 of its own size,
upsamples each view's logits to the image size and fuses them by their maximum before the softmax (DeepLab-v2's
MSC); `predict_split` writes the argmax and the dense-CRF-refined masks (the shared `crf.CRFPool`, CRF of
docs/method.md §3) and `evaluate_predictions` (stage 1's report: one confusion matrix per split, `metrics.py`) scores
them:

```
OUTPUT_DIR/
  config.json, model.safetensors, preprocessor_config.json, *.py     the final model (pipeline-ready)
  checkpoint-<step>/                                                 Trainer checkpoints (resumable)
  predictions/<split>/ms/<id>.png                                    multi-scale argmax
  predictions/<split>/ms_crf/<id>.png                                multi-scale + CRF
  predictions/<split>/report/                                        metrics.json, per_class_iou.{csv,png}, overlays/
  predictions/<split>/fingerprint.json, sources.json                 settings and per-image content (resume rules)
  predictions/<split>/summary.json                                   counts, failures with reasons, the settings
  predictions/<split>/report.html, report_assets/                    every image and its masks, to look at
```
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import SchedulerType

from ..batching import TrainBatchMixin
from ..crf import DenseCRFConfig
from ..data.transforms import resize_mask
from ..fingerprint import FINGERPRINT_FILE, weights_digest
from ..html_report import report_files
from ..image_processing_cpfcte import resize_and_normalize, to_rgb_array
from ..metrics import IGNORE_INDEX, SegmentationMetric
from ..prediction import (
    SOURCES_FILE,
    DatasetSources,
    distributed_state,
    gather_counts,
    hold_output_dir,
    job_threads,
    prepare_job_dir,
    run_prediction_job,
    safe_file_id,
)
from ..pseudo_labeling import OutputLayout, PseudoLabelSummary, evaluate_predictions, write_report_page
from ..results import read_json
from ..trainer import (
    ClosingProgressBarsMixin,
    ConvertedCheckpointMixin,
    DeferredPrecisionCheckMixin,
    FiniteLossMixin,
)
from ..visualization import atomic_write_text, read_mask
from .fusion import check_test_fusion, fused_probabilities
from .modeling_deeplab import DeepLabV2ForSemanticSegmentation
from .processing import IMAGENET_MEAN, IMAGENET_STD


logger = logging.getLogger(__name__)

MULTI_SCALE = (1.0, 0.75, 0.5)


# ----------------------------------------------------------------------------------------------------- training data


def random_scale_crop_flip(
    image: np.ndarray,
    mask: np.ndarray,
    crop_size: int = 321,
    scale_range: tuple[float, float] = (0.5, 1.5),
    flip_prob: float = 0.5,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    DeepLab's training augmentation of one image and its mask.

    1. rescale both by a factor drawn uniformly from `scale_range` (image bilinear through `resize_and_normalize`,
       which also normalises it; mask nearest);
    2. pad to at least `crop_size` on each side, bottom and right (the image with zeros, i.e. the mean colour after
       normalisation; the mask with `ignore_index`);
    3. take a random `crop_size` x `crop_size` crop;
    4. flip left-right with probability `flip_prob`.

    Random numbers come from torch (`generator`, else the global generator), which `DataLoader` seeds per worker.

    Args:
        image: `(H, W, 3)` uint8 RGB. mask: `(H, W)` class ids, same size.

    Returns:
        `pixel_values` `(3, crop_size, crop_size)` float32 and `labels` `(crop_size, crop_size)` int64.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"Image {image.shape[:2]} and mask {mask.shape} sizes differ.")
    low, high = float(scale_range[0]), float(scale_range[1])
    scale = low + (high - low) * torch.rand((), generator=generator).item()
    height, width = mask.shape
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixel_values = resize_and_normalize(image, size, image_mean, image_std)[0]
    labels = torch.from_numpy(resize_mask(mask, size).astype(np.int64))

    pad_height, pad_width = max(0, crop_size - size[0]), max(0, crop_size - size[1])
    if pad_height or pad_width:
        pixel_values = F.pad(pixel_values, (0, pad_width, 0, pad_height), value=0.0)
        labels = F.pad(labels, (0, pad_width, 0, pad_height), value=ignore_index)
    top = int(torch.randint(0, labels.shape[0] - crop_size + 1, (), generator=generator))
    left = int(torch.randint(0, labels.shape[1] - crop_size + 1, (), generator=generator))
    pixel_values = pixel_values[:, top : top + crop_size, left : left + crop_size]
    labels = labels[top : top + crop_size, left : left + crop_size]
    if torch.rand((), generator=generator).item() < flip_prob:
        pixel_values, labels = pixel_values.flip(-1), labels.flip(-1)
    return pixel_values.contiguous(), labels.contiguous()


def resolve_pseudo_label_dir(path: str | os.PathLike, pseudo_label_set: str = "crf") -> Path:
    """
    The folder of `<id>.png` masks to train on: `path/<pseudo_label_set>` when `path` is an output directory of
    `scripts/pseudo_label.py` (it has `crf/` and `bpm/`), else `path` itself.

    Raises:
        NotADirectoryError / FileNotFoundError naming the path when there is no such folder or no PNG in it.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"Pseudo-label directory {str(root)!r} does not exist or is not a directory.")
    layout = OutputLayout(root)
    subfolders = {"crf": layout.crf_dir, "bpm": layout.bpm_dir}
    if pseudo_label_set not in subfolders:
        raise ValueError(f"`pseudo_label_set` must be 'crf' or 'bpm', got {pseudo_label_set!r}.")
    if any(folder.is_dir() for folder in subfolders.values()):
        folder = subfolders[pseudo_label_set]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{str(root)!r} is a pseudo-label output directory without {pseudo_label_set}/ "
                f"(was scripts/pseudo_label.py run{' without --crf' if pseudo_label_set == 'crf' else ''}?)."
            )
        root = folder
    if not any(root.glob("*.png")):
        raise FileNotFoundError(f"No <id>.png masks in {str(root)!r}.")
    return root


class PseudoLabelDataset(torch.utils.data.Dataset):
    """
    Training pairs for stage 2: the images of a `datasets.Dataset` (columns `image`, `id`) and the masks
    `<mask_dir>/<id>.png`, augmented by `random_scale_crop_flip`. Images without a mask (e.g. failed in
    pseudo-labelling) are left out with a warning; none at all is an error.

    Items are `{"pixel_values": (3, crop, crop) float32, "labels": (crop, crop) int64}`.
    """

    def __init__(
        self,
        dataset,
        mask_dir: str | os.PathLike,
        num_labels: int,
        crop_size: int = 321,
        scale_range: tuple[float, float] = (0.5, 1.5),
        flip_prob: float = 0.5,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
    ):
        for column in ("image", "id"):
            if column not in dataset.column_names:
                raise ValueError(f"The training dataset needs an {column!r} column; it has {dataset.column_names}.")
        if crop_size < 1 or not 0 < scale_range[0] <= scale_range[1] or not 0.0 <= flip_prob <= 1.0:
            raise ValueError(
                f"Bad augmentation: crop_size={crop_size}, scale_range={scale_range}, flip_prob={flip_prob}."
            )
        self.mask_dir = Path(mask_dir)
        ids = [str(i) for i in dataset["id"]]
        keep, missing = [], []
        for index, image_id in enumerate(ids):
            (keep if (self.mask_dir / f"{safe_file_id(image_id)}.png").is_file() else missing).append(index)
        if not keep:
            raise FileNotFoundError(
                f"None of the {len(ids)} images (e.g. {ids[:3]}) has a pseudo-label <id>.png in "
                f"{str(self.mask_dir)!r}:"
                " wrong directory or wrong split?"
            )
        if missing:
            logger.warning(
                f"{len(missing)} of {len(ids)} images have no pseudo-label in {self.mask_dir} and are left out "
                f"(e.g. {[ids[i] for i in missing[:5]]})."
            )
        self.images = dataset.select_columns(["image", "id"]).select(keep)
        self.num_labels = int(num_labels)
        self.crop_size = int(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_prob = float(flip_prob)
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.ignore_index = int(ignore_index)

    def __len__(self) -> int:
        return len(self.images)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """`(H, W, 3)` uint8 image, `(H, W)` uint8 mask and the id of item `index`, before augmentation."""
        row = self.images[index]
        image_id = str(row["id"])
        path = self.mask_dir / f"{image_id}.png"
        image = to_rgb_array(row["image"])
        mask = read_mask(path)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{path}: mask is {mask.shape[::-1]} (w x h) but image {image_id!r} is {image.shape[1::-1]}."
            )
        bad = (mask >= self.num_labels) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"{path}: values {np.unique(mask[bad]).tolist()[:10]} are neither class ids 0..{self.num_labels - 1} "
                f"nor {self.ignore_index} (ignore)."
            )
        return image, mask, image_id

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask, _ = self.read_pair(index)
        pixel_values, labels = random_scale_crop_flip(
            image,
            mask,
            self.crop_size,
            self.scale_range,
            self.flip_prob,
            self.image_mean,
            self.image_std,
            self.ignore_index,
        )
        return {"pixel_values": pixel_values, "labels": labels}


# ----------------------------------------------------------------------------------------------------- inference


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
    fused (`deeplab.fusion`: `image`, ours, or `logits`, kazuto1011's).
    """
    return fused_probabilities(model, image, scales, flip, image_mean, image_std, fusion)


@dataclass
class MultiScaleEvalConfig:
    """
    Test-time settings of stage 2 (docs/method.md section 4).

    Attributes:
        scales: multipliers of the image's own size, fused by max (`(1.0, 0.75, 0.5)`; `(1.0,)` = single scale).
        flip: also run each scale flipped left-right (not in the recipe of docs/method.md section 4).
        fusion: where the scales are fused by max (`deeplab.fusion`): `image` (ours: each scale's logits upsampled to
            the image with `align_corners=True`) or `logits` (kazuto1011: at the 1.0 scale's logit size,
            `align_corners=False`, then upsampled).
        crf: refine the fused probabilities with the dense CRF (`crf_config`, docs/method.md section 3).
        crf_workers: CRF worker processes per process (`None`: the CPUs divided by the processes; 0: serial).
        overwrite: recompute masks that exist (otherwise a rerun only does the missing ones).
        num_overlays: image | ground truth | predictions panels written with the report.
        progress: show a progress bar on the main process.
        report_html: write `report.html` and its thumbnails (`cpfcte_hf.html_report`) next to the masks.
    """

    scales: tuple[float, ...] = MULTI_SCALE
    flip: bool = False
    fusion: str = "image"
    crf: bool = True
    crf_config: DenseCRFConfig = field(default_factory=DenseCRFConfig)
    crf_workers: int | None = None
    overwrite: bool = False
    num_overlays: int = 4
    progress: bool = True
    report_html: bool = True

    def __post_init__(self):
        if isinstance(self.crf_config, dict):
            self.crf_config = DenseCRFConfig(**self.crf_config)
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"`scales` must be positive numbers, got {self.scales}.")
        check_test_fusion(self.fusion)
        if self.fusion == "logits" and 1.0 not in self.scales:
            raise ValueError(f"--test_fusion logits fuses at the 1.0 scale's logits: add 1.0 to {list(self.scales)}.")


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
    config, backbone = model.config, model.config.backbone_config
    architecture = {
        "backbone": backbone.model_type,
        "layer_type": backbone.layer_type,
        "depths": list(backbone.depths),
        "hidden_sizes": list(backbone.hidden_sizes),
        "embedding_size": backbone.embedding_size,
        "output_stride": config.output_stride,
        "atrous_rates": list(config.atrous_rates),
        "freeze_batch_norm": bool(config.freeze_batch_norm),
    }
    folder = Path(model_dir) if model_dir is not None else None
    run_args = trainer_state = None
    if folder is not None and folder.is_dir():
        run_args = read_json(folder / "run_args.json", missing_ok=True)
        state = read_json(folder / "trainer_state.json", missing_ok=True)
        trainer_state = None if state is None else {key: state.get(key) for key in TRAINER_STATE_KEYS}
    return {
        "architecture": architecture,
        "num_parameters": model.num_parameters(),
        "run_args": run_args,
        "trainer_state": trainer_state,
    }


def stage_two_fingerprint(model, config: MultiScaleEvalConfig, mean, std) -> dict:
    """Everything that determines stage 2's masks (`cpfcte_hf.fingerprint`): weights, classes, normalisation,
    scales, flip, the CRF. Worker counts and progress do not change a mask and are left out."""
    return {
        "kind": "cpfcte_hf stage-2 predictions",
        "model_weights": weights_digest(model),
        "id2label": {str(i): str(name) for i, name in sorted(model.config.id2label.items())},
        "align_corners": bool(model.config.align_corners),
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
) -> dict:
    """
    Segments every image of `dataset` (columns `image`, `id`, optional `mask`) into `out_dir/ms/<id>.png`
    (multi-scale argmax) and, with `config.crf`, `out_dir/ms_crf/<id>.png`; when the dataset has ground truth,
    scores them with `evaluate_predictions` into `out_dir/report/`, which records `model_info` (what the model is and
    how it was trained, `stage2_model_info`; by default its architecture only).

    Under several processes each takes every N-th image and the report is written once. One run at a time holds
    `out_dir` (`cpfcte_hf.prediction.hold_output_dir`). Existing masks are kept (a killed run resumes) when they were
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
    for required in ("image", "id"):
        if required not in dataset.column_names:
            raise ValueError(f"The dataset needs an {required!r} column; it has {sorted(dataset.column_names)}.")
    state = distributed_state()
    mean, std = _image_statistics(image_processor)
    model.eval()
    out_dir = Path(out_dir)
    with hold_output_dir(out_dir, state), job_threads(state):
        _prepare_stage_two_dir(out_dir, stage_two_fingerprint(model, config, mean, std), config.overwrite, state)
        images = dataset.select_columns(["image", "id"])

        def read(index: int):
            return to_rgb_array(images[index]["image"]), None, None

        def predict(items):
            return [
                multi_scale_probabilities(model, rgb, config.scales, config.flip, mean, std, config.fusion)
                for rgb, _ in items
            ]

        ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]  # one read, not one per row
        counts = run_prediction_job(
            ids, read, predict, out_dir / "ms", out_dir / "ms_crf" if config.crf else None, config.crf_config,
            config.crf_workers, overwrite=config.overwrite, progress=config.progress, desc="deeplab predict",
            state=state, sources=DatasetSources(dataset), record_dir=out_dir,
        )  # fmt: skip
        counts = gather_counts(state, counts)  # every process's counts: the whole split is accounted for
        report = _score_split(model, dataset, out_dir, config, dataset_name, split, model_info)
        summary = PseudoLabelSummary.from_job(counts, dataset, time.perf_counter() - started)
        if state is None or state.is_main_process:
            _write_stage_two_summary(out_dir, summary, model, config, dataset_name, split, state)
        report_html = write_report_page(out_dir, dataset, state, config.progress) if config.report_html else None
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


def _write_stage_two_summary(out_dir: Path, summary, model, config: MultiScaleEvalConfig, dataset_name, split, state):
    """`out_dir/summary.json` (atomically): the counts (changed included), failures and settings of the run."""
    record = {
        **summary.to_dict(),
        "stage": "stage2",
        "dataset": dataset_name,
        "split": split,
        "model": getattr(model.config, "_name_or_path", None),
        "num_processes": state.num_processes if state is not None else 1,
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


# ----------------------------------------------------------------------------------------------------- trainer


@dataclass
class DeepLabV2TrainingArguments(TrainBatchMixin, DeferredPrecisionCheckMixin, TrainingArguments):
    """
    `TrainingArguments` with the DeepLab-v2 recipe (docs/method.md section 4) as defaults, and its augmentation.

    Defaults that differ from `TrainingArguments`: `do_train=True`, `optim="sgd"` (with `momentum`; another
    transformers optimizer name, e.g. `adamw_torch`, gets the same parameter groups), `global_train_batch_size=10` (5 per device at most, kazuto1011's 5 x 2: `batching`),
    `max_steps=20000`, `learning_rate=2.5e-4` (backbone; the classifier gets `classifier_lr_multiplier` x),
    `weight_decay=5e-4`, `seed=1234`, checkpoints every 1000 steps (the last 3 kept), no evaluation during training
    (the final model is evaluated), `remove_unused_columns=False`, TensorBoard logging.
    """

    crop_size: int = field(default=321, metadata={"help": "Side of the square training crops (DeepLab: 321)."})
    min_scale: float = field(default=0.5, metadata={"help": "Smallest random rescaling factor (0.5)."})
    max_scale: float = field(default=1.5, metadata={"help": "Largest random rescaling factor (1.5)."})
    flip_prob: float = field(default=0.5, metadata={"help": "Probability of a left-right flip."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (0.9)."})
    classifier_lr_multiplier: float = field(
        default=10.0, metadata={"help": "Learning-rate multiplier of the ASPP classifier (DeepLab-v2: 10)."}
    )
    poly_power: float = field(default=0.9, metadata={"help": "Power of the poly decay (1 - step / max_steps) ** p."})
    multi_scale_loss: bool = field(
        default=False,
        metadata={
            "help": "kazuto1011's MSC training loss: cross-entropy on the logits of the crop at each of "
            "`loss_scales` and on their max-fused logits, each against the labels resized (nearest) to the logits, "
            "summed. False: one cross-entropy on the crop's logits upsampled to the labels."
        },
    )
    loss_scales: list[float] = field(
        default_factory=lambda: [1.0, 0.75, 0.5], metadata={"help": "Input scales of the multi-scale loss."}
    )
    lr_groups: str = field(
        default="backbone_aspp",
        metadata={
            "help": "backbone_aspp: the trainable backbone at 1x, the whole ASPP at classifier_lr_multiplier x. "
            "deeplab_v2 (kazuto1011, Caffe's lr_mult): backbone convolutions 1x, ASPP weights "
            "classifier_lr_multiplier x (10), ASPP biases 2 * classifier_lr_multiplier x (20) without weight "
            "decay; BatchNorm parameters are never optimised."
        },
    )
    eval_scales: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "Scales of the evaluations during training (fast; the final evaluation has its own)."},
    )
    do_train: bool = True
    optim: str = "sgd"  # DeepLab-v2: SGD with `momentum`; any other transformers optimizer gets the same groups
    global_train_batch_size: int | None = field(
        default=10, metadata={"help": "Images per optimiser step over all processes (kazuto1011: 10)."}
    )
    max_per_device_train_batch_size: int | None = field(
        default=5, metadata={"help": "Most images per device at once (kazuto1011: 5, with iter_size 2)."}
    )
    max_steps: int = 20000
    learning_rate: float = 2.5e-4
    weight_decay: float = 5e-4
    lr_scheduler_type: str = "polynomial"  # with `lr_scheduler_kwargs` power=poly_power, lr_end=0 (`__post_init__`)
    seed: int = 1234
    eval_strategy: str = "no"
    save_strategy: str = "steps"
    save_steps: float = 1000
    save_total_limit: int | None = 3
    logging_steps: float = 20
    metric_for_best_model: str | None = "mean_iou"
    greater_is_better: bool | None = True
    remove_unused_columns: bool = False
    report_to: None | str | list[str] = "tensorboard"
    dataloader_num_workers: int = 2

    def trains_model(self) -> bool:
        return self.do_train

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"Need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}.")
        if self.crop_size < 1:
            raise ValueError(f"`crop_size` must be >= 1, got {self.crop_size}.")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError("DeepLab-v2 trains for a number of steps: set `max_steps` (the recipe: 20000).")
        if self.lr_groups not in LR_GROUPS:
            raise ValueError(f"`lr_groups` must be one of {LR_GROUPS}, got {self.lr_groups!r}.")
        if not self.loss_scales or min(self.loss_scales) <= 0:
            raise ValueError(f"`loss_scales` must be positive numbers, got {self.loss_scales}.")
        if self.lr_scheduler_type == SchedulerType.POLYNOMIAL:
            # transformers' polynomial schedule is a `LambdaLR` factor `((lr - lr_end) * remaining**power + lr_end) / lr`
            # of each group's own learning rate: with lr_end=0 it is `remaining**power` for every group, so the ASPP's
            # 10x / 20x multipliers hold at every step.
            kwargs = dict(self.lr_scheduler_kwargs or {})
            if kwargs.get("lr_end", 0.0) != 0.0:
                raise ValueError(
                    f"`lr_scheduler_kwargs` lr_end={kwargs['lr_end']}: the poly decay of DeepLab-v2 ends at 0 (a "
                    "non-zero end would not scale with the per-group learning-rate multipliers)."
                )
            if kwargs.get("power", self.poly_power) != self.poly_power:
                raise ValueError(
                    f"`lr_scheduler_kwargs` power={kwargs['power']} disagrees with `poly_power`={self.poly_power}: "
                    "set `poly_power`."
                )
            self.lr_scheduler_kwargs = {**kwargs, "power": self.poly_power, "lr_end": 0.0}


def resize_labels_nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    Class-id maps `(B, H, W)` resized to `size` by nearest neighbour at pixel centres (source pixel
    `floor((i + 0.5) * H / h)`), which is PIL's NEAREST that kazuto1011's `resize_labels` uses.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()


def multi_scale_training_loss(
    model,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    scales=MULTI_SCALE,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, object]:
    """
    DeepLab-v2's multi-scale (MSC) training loss, as kazuto1011's `libs/models/msc.py` and `main.py` compute it.

    The crop `(B, 3, H, W)` runs at each of `scales` (the first is the reference, 1.0; the others resized bilinearly,
    `align_corners=False`); the logits of every scale are resized bilinearly to the reference logits' size and fused
    by their element-wise maximum. The loss is the sum of the cross-entropies of every scale's logits and of the
    fused logits, each against `labels` `(B, H, W)` resized (nearest) to that logits' own size.

    Returns `(loss, outputs of the reference scale)`.
    """
    outputs = model(pixel_values=pixel_values)
    reference = outputs.logits
    size = reference.shape[-2:]
    pyramid = [reference]
    for scale in scales[1:]:
        scaled = F.interpolate(pixel_values, scale_factor=float(scale), mode="bilinear", align_corners=False)
        pyramid.append(model(pixel_values=scaled).logits)
    fused = torch.stack(
        [reference] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in pyramid[1:]]
    ).amax(dim=0)
    loss = 0.0
    for logits in pyramid + [fused]:
        target = resize_labels_nearest(labels, logits.shape[-2:])
        if (target != ignore_index).any():
            loss = loss + F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
        else:  # a crop without labelled pixels: a zero that keeps the graph (see `compute_loss` of the model)
            loss = loss + logits.float().sum() * 0.0
    return loss, outputs


LR_GROUPS = ("backbone_aspp", "deeplab_v2")


def sgd_parameter_groups(
    model: DeepLabV2ForSemanticSegmentation,
    learning_rate: float,
    weight_decay: float,
    classifier_lr_multiplier: float = 10.0,
    lr_groups: str = "backbone_aspp",
) -> list[dict]:
    """
    SGD parameter groups. `"backbone_aspp"`: the trainable backbone at `learning_rate`, the ASPP at
    `classifier_lr_multiplier` x. `"deeplab_v2"` (kazuto1011's `main.py` `get_params`, after Caffe's
    `lr_mult`/`decay_mult`): the backbone's convolution weights at 1x, the ASPP weights at `classifier_lr_multiplier`
    x, the ASPP biases at twice that without weight decay; nothing else (BatchNorm) is optimised.
    """
    if lr_groups not in LR_GROUPS:
        raise ValueError(f"`lr_groups` must be one of {LR_GROUPS}, got {lr_groups!r}.")
    if lr_groups == "deeplab_v2":
        convolutions = [m for m in model.resnet.modules() if isinstance(m, torch.nn.Conv2d)]
        branches = list(model.aspp.branches)
        return [
            {
                "params": [m.weight for m in convolutions if m.weight.requires_grad],
                "lr": learning_rate,
                "weight_decay": weight_decay,
                "name": "backbone",
            },
            {
                "params": [m.weight for m in branches],
                "lr": learning_rate * classifier_lr_multiplier,
                "weight_decay": weight_decay,
                "name": "aspp_weight",
            },
            {
                "params": [m.bias for m in branches],
                "lr": learning_rate * 2 * classifier_lr_multiplier,
                "weight_decay": 0.0,
                "name": "aspp_bias",
            },
        ]
    classifier = [p for p in model.aspp.parameters() if p.requires_grad]
    classifier_ids = {id(p) for p in classifier}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in classifier_ids]
    return [
        {"params": backbone, "lr": learning_rate, "weight_decay": weight_decay, "name": "backbone"},
        {
            "params": classifier,
            "lr": learning_rate * classifier_lr_multiplier,
            "weight_decay": weight_decay,
            "name": "classifier",
        },
    ]


class DeepLabV2Trainer(ClosingProgressBarsMixin, FiniteLossMixin, ConvertedCheckpointMixin, Trainer):
    """
    `transformers.Trainer` for DeepLab-v2: SGD with a 10x classifier learning rate and poly decay
    (`DeepLabV2TrainingArguments`), a stop with a clear message when the loss stops being finite, and evaluation by
    mIoU: `eval_dataset` is a `datasets.Dataset` with `image` and `mask` columns, scored image by image at each
    image's own size (`args.eval_scales`, max-fused, no CRF) into one confusion matrix (summed over processes).
    """

    def __init__(self, model=None, args: DeepLabV2TrainingArguments | None = None, **kwargs):
        if not isinstance(args, DeepLabV2TrainingArguments):
            raise TypeError(f"`args` must be a DeepLabV2TrainingArguments, got {type(args).__name__}.")
        args.check_precision()
        super().__init__(model=model, args=args, **kwargs)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = sgd_parameter_groups(
                model if model is not None else self.model,
                self.args.learning_rate,
                self.args.weight_decay,
                self.args.classifier_lr_multiplier,
                self.args.lr_groups,
            )
            if self.args.optim == "sgd":
                self.optimizer = torch.optim.SGD(groups, lr=self.args.learning_rate, momentum=self.args.momentum)
            else:  # transformers' optimizer of that name (its betas, epsilon, ...) on the same groups
                optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
                optimizer_kwargs.pop("params", None)
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def model_loss(self, model, inputs):
        if not self.args.multi_scale_loss or not model.training:
            return super().model_loss(model, inputs)
        config = self.accelerator.unwrap_model(model).config
        return multi_scale_training_loss(
            model, inputs["pixel_values"], inputs["labels"], self.args.loss_scales, config.semantic_loss_ignore_index
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("DeepLabV2Trainer.evaluate needs an `eval_dataset` with `image` and `mask` columns.")
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        config = model.config
        metric = SegmentationMetric(config.num_labels, config.semantic_loss_ignore_index)
        mean, std = _image_statistics(self.processing_class)
        rank, world = self.args.process_index, self.args.world_size
        rows = dataset.select_columns(["image", "mask"])
        for index in range(rank, len(rows), world):
            row = rows[index]
            image = to_rgb_array(row["image"])
            probabilities = multi_scale_probabilities(model, image, self.args.eval_scales, False, mean, std)
            metric.update(probabilities.argmax(dim=0).numpy(), np.asarray(row["mask"]))
        metric.all_reduce(self.args.device)
        model.train(was_training)
        names = [config.id2label[i] for i in range(config.num_labels)]
        metrics = metric.compute().to_dict(names, prefix=f"{metric_key_prefix}_")
        metrics = {key: (float("nan") if value is None else value) for key, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = [
    "MULTI_SCALE",
    "DeepLabV2Trainer",
    "DeepLabV2TrainingArguments",
    "MultiScaleEvalConfig",
    "LR_GROUPS",
    "PseudoLabelDataset",
    "multi_scale_probabilities",
    "multi_scale_training_loss",
    "predict_split",
    "stage2_model_info",
    "random_scale_crop_flip",
    "resize_labels_nearest",
    "resolve_pseudo_label_dir",
    "sgd_parameter_groups",
]
