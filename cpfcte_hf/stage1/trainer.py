# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Training CPF-CTE with `transformers.Trainer`: the Top-K BCE objective and the paper's two-stage schedule.

Schedule (paper section 4.2 with ViT-PCM's freezing; docs/method.md section 2):

* stage 1, the first `stage1_epochs` epochs (2): learning rate `stage1_learning_rate` (1e-3); with
  `stage1_freeze_encoder` the whole ViT is frozen and only the heads (class tokens, CF-BiLSTM, classifier) train;
* stage 2, the rest: learning rate `learning_rate` (1e-4, constant); the heads plus the last
  `trainable_encoder_blocks` (5) encoder blocks and the final LayerNorm train. `-1` trains the whole encoder
  (embeddings included), which is what training from scratch needs.

Adam without weight decay (`optim="adamw_torch"` with `weight_decay=0` is exactly Adam); with
`stage2_fresh_optimizer` its state starts again at stage 2, as ViT-PCM compiles a new Adam per stage. With
`equivariance_loss_weight > 0` ViT-PCM's equivariance loss L_ET is added (`EquivarianceLossMixin`; the batches
then carry the second views of `data.transforms.EquivarianceTrainTransform`). Evaluation computes the
pseudo-label mIoU of the validation split (patch probabilities masked by the image-level labels, per-class max
normalised, upsampled, argmax; the same `class_probability_maps` as pseudo-labelling) with a streaming confusion
matrix, and the best checkpoint is chosen by it.

Parameters that no stage trains are frozen before the model is wrapped for distributed training, so DDP never
registers them; the stage-2 encoder blocks are registered and only switched off during stage 1 (DDP runs with
`find_unused_parameters=True` for that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import (
    IntervalStrategy,
    SaveStrategy,
    SchedulerType,
)
from transformers.training_args import OptimizerNames
from transformers.utils import logging

from ..utils.batching import TrainBatchMixin
from ..utils.options import with_aliases
from ..utils.trainer_mixins import (
    ClosingProgressBarsMixin,
    ConvertedCheckpointMixin,
    DeferredPrecisionCheckMixin,
    FiniteLossMixin,
)
from .equivariance import EquivarianceLossMixin
from .evaluation import EvalPicturesCallback, SegmentationEvalMetrics, make_preprocess_logits_for_metrics
from .schedule import StageLearningRate, TwoStageScheduleCallback, encoder_parameter_groups


logger = logging.get_logger(__name__)


@dataclass
class CPFCTETrainingArguments(TrainBatchMixin, DeferredPrecisionCheckMixin, TrainingArguments):
    """
    `TrainingArguments` with the paper's defaults and the two-stage schedule.

    Defaults that differ from `TrainingArguments`: `learning_rate=1e-4` (stage 2), `num_train_epochs=50`,
    `global_train_batch_size=16` (the paper's; at most 8 per device, its 2-GPU split: `batching`), `weight_decay=0`, `optim="adamw_torch"`
    (= Adam), `seed=1234`, evaluation and saving every epoch, best checkpoint by `eval_mean_iou`,
    `remove_unused_columns=False` (the datasets use `set_transform`), `label_names=["labels", "masks"]`,
    streaming evaluation metrics, TensorBoard logging.
    """

    output_dir: str | None = with_aliases(TrainingArguments, "output_dir", "--out")

    stage1_epochs: float = field(
        default=2.0, metadata={"help": "Length of stage 1 in epochs (paper: 2). 0 trains in one stage."}
    )
    stage1_steps: int | None = field(
        default=None, metadata={"help": "Length of stage 1 in optimizer steps; overrides `stage1_epochs`."}
    )
    stage1_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of stage 1 (paper: 1e-3)."})
    stage1_freeze_encoder: bool = field(
        default=True, metadata={"help": "Freeze the whole ViT encoder during stage 1 (ViT-PCM)."}
    )
    stage2_fresh_optimizer: bool = field(
        default=False,
        metadata={
            "help": "Start stage 2 with a fresh optimizer state (ViT-PCM compiles a new Keras Adam per stage); "
            "False keeps one Adam state across both stages."
        },
    )
    equivariance_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of ViT-PCM's equivariance loss L_ET (its VOC config: on, weight 1); 0 = off. Needs the "
            "second views of EquivarianceTrainTransform in the batches."
        },
    )
    trainable_encoder_blocks: int = field(
        default=5,
        metadata={
            "help": "Encoder blocks (from the top) trained in stage 2, with the final LayerNorm (ViT-PCM: 5). "
            "-1 trains the whole encoder, embeddings included (training from scratch)."
        },
    )
    eval_pictures: int = field(
        default=4,
        metadata={"help": "Validation images drawn (image | ground truth | pseudo-label) at each evaluation."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of stage 2 (paper: 1e-4)."})
    num_train_epochs: float = field(default=50.0, metadata={"help": "Epochs in total (paper: at most 50)."})
    global_train_batch_size: int | None = field(
        default=16, metadata={"help": "Images per optimiser step over all processes (paper: 16); README: batch sizes."}
    )
    max_per_device_train_batch_size: int | None = field(
        default=8, metadata={"help": "Most images per device at once (paper: 16 on two GPUs, 8 each)."}
    )
    per_device_eval_batch_size: int = 8
    weight_decay: float = 0.0
    optim: OptimizerNames | str = "adamw_torch"
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={"help": "Stage 2: constant (paper), linear or cosine decay to 0. Stage 1 is always constant."},
    )
    seed: int = 1234
    eval_strategy: IntervalStrategy | str = "epoch"
    save_strategy: SaveStrategy | str = "epoch"
    logging_steps: float = 10
    save_total_limit: int | None = 3
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "mean_iou"
    greater_is_better: bool | None = True
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels", "masks"])
    batch_eval_metrics: bool = True
    report_to: None | str | list[str] = "tensorboard"
    dataloader_num_workers: int = 2
    augmentation_device: str = field(
        default="auto",
        metadata={
            "help": "Where the training augmentation runs: 'loader' (DataLoader workers, CPU), 'device' (on the "
            "training device after the transfer; workers only decode and resize), or 'auto' (device on CUDA)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.augmentation_device not in AUGMENTATION_DEVICES:
            raise ValueError(
                f"--augmentation_device must be one of {AUGMENTATION_DEVICES}, got {self.augmentation_device!r}."
            )

    def per_device_multiple(self) -> int:
        """With L_ET every 4 images of a device's batch make one mosaic: a derived per-device batch is a multiple of 4."""
        return 4 if self.equivariance_loss_weight > 0 else 1

    def resolved_augmentation_device(self) -> str:
        """'loader' or 'device': 'auto' is 'device' when training on CUDA, where loader workers would not keep up."""
        if self.augmentation_device != "auto":
            return self.augmentation_device
        return "device" if self.device.type == "cuda" else "loader"


AUGMENTATION_DEVICES = ("auto", "loader", "device")


class CPFCTETrainer(
    ClosingProgressBarsMixin, EquivarianceLossMixin, FiniteLossMixin, ConvertedCheckpointMixin, Trainer
):
    """
    `transformers.Trainer` for CPF-CTE: Top-K BCE loss (the model's own), the two-stage schedule of
    `CPFCTETrainingArguments`, pseudo-label mIoU evaluation, and a stop with a clear message when the loss stops
    being finite.

    `compute_metrics` and `preprocess_logits_for_metrics` default to the pseudo-label mIoU when the evaluation
    batches carry `masks`; pass your own to override.

    `batch_augmentation` (`TrainTransform.batch_augmentation`) finishes training batches whose `pixel_values` are
    still `uint8` (`TrainTransform(augment_in_loader=False)`) on the training device, after the transfer.
    """

    def __init__(
        self,
        model=None,
        args: CPFCTETrainingArguments | None = None,
        batch_augmentation: Callable | None = None,
        **kwargs,
    ):
        if args is None:
            raise ValueError("CPFCTETrainer needs `args` (a CPFCTETrainingArguments).")
        if not isinstance(args, CPFCTETrainingArguments):
            raise TypeError(f"`args` must be a CPFCTETrainingArguments, got {type(args).__name__}.")
        args.check_precision()
        config = model.config
        if kwargs.get("compute_metrics") is None and "masks" in (args.label_names or []):
            kwargs["compute_metrics"] = SegmentationEvalMetrics(
                config.num_labels, [config.id2label[i] for i in range(config.num_labels)]
            )
            if kwargs.get("preprocess_logits_for_metrics") is None:
                kwargs["preprocess_logits_for_metrics"] = make_preprocess_logits_for_metrics(True)
        if args.ddp_find_unused_parameters is None:
            # The stage-2 encoder blocks are registered with DDP but get no gradient during a frozen stage 1;
            # otherwise every registered parameter gets one, and the search for unused ones is wasted work.
            args.ddp_find_unused_parameters = bool(args.stage1_freeze_encoder)

        never_trained, self.stage2_encoder_parameters = encoder_parameter_groups(model, args.trainable_encoder_blocks)
        for param in model.parameters():
            param.requires_grad_(True)
        for param in never_trained:
            param.requires_grad_(False)

        super().__init__(model=model, args=args, **kwargs)
        self.batch_augmentation = batch_augmentation
        self.stage1_steps = 0
        self.add_callback(TwoStageScheduleCallback(self))
        self.add_callback(EvalPicturesCallback(self, num_examples=args.eval_pictures))

    def training_step(self, model, inputs, num_items_in_batch=None):
        if inputs.get("pixel_values") is not None and inputs["pixel_values"].dtype == torch.uint8:
            if self.batch_augmentation is None:
                raise ValueError(
                    "The training batches hold uint8 images (TrainTransform(augment_in_loader=False)) but the "
                    "trainer has no `batch_augmentation` to finish them: pass "
                    "`batch_augmentation=transform.batch_augmentation`."
                )
            inputs = self._prepare_inputs(inputs)
            inputs["pixel_values"], masks = self.batch_augmentation(inputs["pixel_values"], inputs.get("masks"))
            if masks is not None:
                inputs["masks"] = masks
        return super().training_step(model, inputs, num_items_in_batch)

    def _compute_stage1_steps(self) -> int:
        if self.args.stage1_steps is not None:
            return max(0, int(self.args.stage1_steps))
        if self.args.stage1_epochs <= 0:
            return 0
        batches_per_epoch = len(self.get_train_dataloader())
        steps_per_epoch = max(1, batches_per_epoch // self.args.gradient_accumulation_steps)
        return int(math.ceil(self.args.stage1_epochs * steps_per_epoch))

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.stage1_steps = self._compute_stage1_steps()
            factor = self.args.stage1_learning_rate / self.args.learning_rate
            schedule = StageLearningRate(
                self.stage1_steps,
                factor,
                warmup_steps=self.args.get_warmup_steps(num_training_steps),
                stage2_decay=str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)),
                total_steps=num_training_steps,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            logger.info(
                f"Two-stage schedule: stage 1 = {self.stage1_steps} steps at lr {self.args.stage1_learning_rate:g}"
                f"{' with the encoder frozen' if self.args.stage1_freeze_encoder else ''}; stage 2 at lr "
                f"{self.args.learning_rate:g} with {self.args.trainable_encoder_blocks} encoder blocks trainable."
            )
        return self.lr_scheduler


__all__ = [
    "AUGMENTATION_DEVICES",
    "CPFCTETrainer",
    "CPFCTETrainingArguments",
]
