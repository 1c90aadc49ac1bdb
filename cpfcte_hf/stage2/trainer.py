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

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import SchedulerType

from ..models.cpfcte.image_processing_cpfcte import to_rgb_array
from ..models.cpfcte.metrics import SegmentationMetric
from ..models.segmenters import segmentation_loss
from ..prediction.config import MULTI_SCALE
from ..prediction.segment import (
    _image_statistics,
    multi_scale_probabilities,
)
from ..utils.batching import TrainBatchMixin
from ..utils.options import with_aliases
from ..utils.trainer_mixins import (
    ClosingProgressBarsMixin,
    ConvertedCheckpointMixin,
    DeferredPrecisionCheckMixin,
    FiniteLossMixin,
)
from .losses import multi_scale_training_loss
from .optim import LR_GROUPS, sgd_parameter_groups


logger = logging.getLogger(__name__)


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

    output_dir: str | None = with_aliases(TrainingArguments, "output_dir", "--out")

    crop_size: int = field(default=321, metadata={"help": "Side of the square training crops (DeepLab: 321)."})
    min_scale: float = field(default=0.5, metadata={"help": "Smallest random rescaling factor (0.5)."})
    max_scale: float = field(default=1.5, metadata={"help": "Largest random rescaling factor (1.5)."})
    flip_prob: float = field(default=0.5, metadata={"help": "Probability of a left-right flip."})
    vflip_prob: float = field(
        default=0.0,
        metadata={
            "help": "Probability of a top-bottom flip of the crop (0: DeepLab's recipe; not in the paper when on)."
        },
    )
    transpose_prob: float = field(
        default=0.0,
        metadata={
            "help": "Probability of transposing the square crop (height <-> width); with flip_prob and vflip_prob "
            "0.5 the crop takes each of the 8 flips and 90-degree turns alike (0: DeepLab's recipe; not in the "
            "paper when on)."
        },
    )
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
        for name in ("flip_prob", "vflip_prob", "transpose_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` is a probability (0 to 1), got {getattr(self, name)}.")
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
        config = self.accelerator.unwrap_model(model).config
        if not self.args.multi_scale_loss or not model.training:  # one loss for every architecture
            return segmentation_loss(
                model,
                inputs["pixel_values"],
                inputs["labels"],
                config.semantic_loss_ignore_index,
                align_corners=bool(getattr(config, "align_corners", False)),
            )
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
]
