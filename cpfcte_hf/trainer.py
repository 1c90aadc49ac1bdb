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

import contextlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    IntervalStrategy,
    SaveStrategy,
    SchedulerType,
    get_last_checkpoint,
    sort_checkpoints,
)
from transformers.training_args import OptimizerNames
from transformers.utils import logging

from .batching import TrainBatchMixin
from .data.transforms import apply_flips, crop_and_resize, make_mosaics, revert_flips, split_mosaics
from .image_processing_cpfcte import class_probability_maps, merge_class_labels
from .metrics import SegmentationMetric


logger = logging.get_logger(__name__)

MODEL_INPUT_NAMES = ("pixel_values", "labels")
BF16_OPTIONS = ("bf16", "bf16_full_eval")


def bf16_available(use_cpu: bool = False) -> bool:
    """Whether `TrainingArguments` accepts bf16 here: on the CPU (`use_cpu`), a GPU with bf16, or an XLA device."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return use_cpu or is_torch_bf16_gpu_available() or is_torch_xla_available()


class DeferredPrecisionCheckMixin:
    """
    `TrainingArguments` whose bf16 (`bf16`, `bf16_full_eval`) is not refused while the arguments are built, on a
    machine without bf16, but by `check_precision()`: a GPU recipe's settings can then be printed anywhere
    (`--print_config`), and a command refuses bf16 only after its inputs were checked, in one line that says what
    to pass. The trainers call `check_precision()` before they train, so such arguments never train in float32
    silently. Mixed in before `TrainingArguments`.
    """

    def __post_init__(self):
        deferred = [name for name in BF16_OPTIONS if getattr(self, name)] if not bf16_available(self.use_cpu) else []
        for name in deferred:
            setattr(self, name, False)
        try:
            super().__post_init__()
        finally:
            for name in deferred:
                setattr(self, name, True)  # as asked: printed so, and refused by check_precision()

    def check_precision(self, turn_off: str = "--bf16 false") -> None:
        """Raises `ValueError` (one line, naming `turn_off`, the way to train in float32) where bf16 is asked for and
        this machine has no bf16."""
        asked = [name for name in BF16_OPTIONS if getattr(self, name)]
        if asked and not bf16_available(self.use_cpu):
            raise ValueError(
                f"{' and '.join(asked)} is on (the GPU presets turn it on), but this machine has no GPU with "
                f"bfloat16: pass {turn_off} to train in float32 here."
            )


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


_CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


@contextlib.contextmanager
def closing_progress_bars(trainer: Trainer):
    """
    Closes `trainer`'s progress bars when the block raises: `Trainer` leaves them open then, and a bar closed by the
    interpreter at exit redraws itself after the command's error line.
    """
    try:
        yield
    except BaseException:
        for callback in trainer.callback_handler.callbacks:
            for name in ("training_bar", "prediction_bar"):
                if getattr(callback, name, None) is not None:
                    getattr(callback, name).close()
                    setattr(callback, name, None)
        raise


class ClosingProgressBarsMixin:
    """`train` and `evaluate` that close the trainer's progress bars when they raise (`closing_progress_bars`), so
    that an error (e.g. `FiniteLossMixin`'s) is the last thing printed."""

    def train(self, *args, **kwargs):
        with closing_progress_bars(self):
            return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with closing_progress_bars(self):
            return super().evaluate(*args, **kwargs)


def is_complete_checkpoint(path: str) -> bool:
    """`Trainer` writes `trainer_state.json` last: a checkpoint without it was cut off while being written."""
    return os.path.isfile(os.path.join(path, "trainer_state.json"))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` (`get_last_checkpoint`) that was written completely: a run killed
    while saving leaves a partial one, which is skipped for the newest complete one before it."""
    if not os.path.isdir(output_dir):
        return None
    last = get_last_checkpoint(output_dir)
    if last is None or is_complete_checkpoint(last):
        return last
    for path in reversed(sort_checkpoints(output_dir)):
        if not _CHECKPOINT_PATTERN.match(os.path.basename(path)):
            continue
        if is_complete_checkpoint(path):
            return path
        logger.warning(f"Skipping {path}: it was not written completely (no trainer_state.json).")
    return None


RESUME_LAST = ("true", "last", "latest")


def resolve_resume_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """
    `--resume_from_checkpoint` of both stages -> the checkpoint to pass to `Trainer.train`: unset / `false` / `none`
    -> None (start fresh); `last` (`latest`, `true`) -> the newest complete checkpoint in `output_dir`
    (`last_complete_checkpoint`); a path -> that checkpoint. A `last` without a complete checkpoint, a path that is not
    a folder, or a checkpoint that was cut off is a clear error naming the folder.
    """
    if resume is None or resume is False or str(resume).lower() in ("", "false", "none"):
        return None
    if resume is True or str(resume).lower() in RESUME_LAST:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no complete checkpoint in {output_dir}.")
        return last
    if not os.path.isdir(resume):
        raise FileNotFoundError(f"--resume_from_checkpoint: {resume} is not a checkpoint directory.")
    if not is_complete_checkpoint(resume):
        raise ValueError(f"--resume_from_checkpoint: {resume} was not written completely (no trainer_state.json).")
    return resume


STAGE2_DECAYS = ("constant", "linear", "cosine")


class StageLearningRate:
    """
    `LambdaLR` multiplier: `stage1_factor` for the first `stage1_steps` optimizer steps, then 1 (the paper's
    constant stage 2), or a `"linear"` / `"cosine"` decay to 0 over the stage-2 steps up to `total_steps`. With
    `warmup_steps`, a linear ramp from 1/warmup_steps to 1 over the first steps of the run.
    """

    def __init__(
        self,
        stage1_steps: int,
        stage1_factor: float,
        warmup_steps: int = 0,
        stage2_decay: str = "constant",
        total_steps: int | None = None,
    ):
        if stage2_decay not in STAGE2_DECAYS:
            raise ValueError(f"The stage-2 schedule must be one of {STAGE2_DECAYS}, got {stage2_decay!r}.")
        self.stage1_steps = stage1_steps
        self.stage1_factor = stage1_factor
        self.warmup_steps = warmup_steps
        self.stage2_decay = stage2_decay
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.stage1_steps:
            factor = self.stage1_factor
        elif self.stage2_decay == "constant" or not self.total_steps or self.total_steps <= self.stage1_steps:
            factor = 1.0
        else:
            progress = min(1.0, (step - self.stage1_steps) / (self.total_steps - self.stage1_steps))
            factor = 1.0 - progress if self.stage2_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return factor


def encoder_parameter_groups(model, trainable_encoder_blocks: int) -> tuple[list, list]:
    """
    Splits the ViT encoder's parameters into (never trained, trained in stage 2).

    The stage-2 set is the last `trainable_encoder_blocks` blocks plus the final LayerNorm; `-1` means every
    encoder parameter, embeddings included.
    """
    vit = model.vit
    if trainable_encoder_blocks < 0:
        return [], list(vit.parameters())
    layers = model.encoder_layers()
    num_layers = len(layers)
    if trainable_encoder_blocks > num_layers:
        raise ValueError(
            f"`trainable_encoder_blocks={trainable_encoder_blocks}` but the encoder has {num_layers} blocks "
            "(use -1 to train all of it)."
        )
    trained_modules = [model.encoder_final_norm(), *layers[num_layers - trainable_encoder_blocks :]]
    trained = {id(p) for module in trained_modules for p in module.parameters()}
    params = list(vit.parameters())
    return [p for p in params if id(p) not in trained], [p for p in params if id(p) in trained]


class TwoStageScheduleCallback(TrainerCallback):
    """Switches the stage-2 encoder blocks off during stage 1 and on after it (also when resuming mid-run)."""

    def __init__(self, trainer: CPFCTETrainer):
        self.trainer = trainer
        self.stage = None

    def _apply(self, state) -> None:
        trainer = self.trainer
        stage = 1 if state.global_step < trainer.stage1_steps else 2
        if stage == self.stage:
            return
        frozen = stage == 1 and trainer.args.stage1_freeze_encoder
        for param in trainer.stage2_encoder_parameters:
            param.requires_grad_(not frozen)
        if stage == 2 and trainer.args.stage2_fresh_optimizer and 0 < trainer.stage1_steps == state.global_step:
            # A fresh Adam: moments and step counts (hence the bias correction) start again. The optimizer itself
            # is kept, so the learning-rate schedule and DDP/accelerate wrappers stay attached to it.
            trainer.optimizer.state.clear()
            logger.info(f"Step {state.global_step}: stage 2 starts with a fresh optimizer state.")
        if self.stage is not None or state.global_step > 0:
            logger.info(f"Step {state.global_step}: entering training stage {stage}.")
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state)


class SegmentationEvalMetrics:
    """
    `compute_metrics` for `Trainer`: a confusion matrix over the whole evaluation split (streamed batch by batch
    with `batch_eval_metrics=True`, or all at once), returning `mean_iou`, `pixel_accuracy` and `iou_<class>`.

    Expects `EvalPrediction.predictions` to be class-id maps `(B, H, W)` (see `make_preprocess_logits_for_metrics`)
    and `label_ids` to be `(image_labels, masks)` or `masks`.
    """

    def __init__(self, num_labels: int, class_names=None, ignore_index: int = 255):
        self.metric = SegmentationMetric(num_labels, ignore_index=ignore_index)
        self.class_names = list(class_names) if class_names is not None else None

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict | None:
        masks = eval_prediction.label_ids
        if isinstance(masks, (tuple, list)):
            masks = masks[-1]
        predictions = eval_prediction.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        if isinstance(predictions, torch.Tensor):
            predictions = predictions.detach().cpu().numpy()
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu().numpy()
        self.metric.update(np.asarray(predictions), np.asarray(masks))
        if not compute_result:
            return None
        scores = self.metric.compute()
        self.metric.reset()
        # A class absent from both the ground truth and the predictions has no IoU: leave it out rather than
        # report None, which the Trainer's logging cannot format.
        return {key: value for key, value in scores.to_dict(self.class_names).items() if value is not None}


def make_preprocess_logits_for_metrics(mask_by_image_labels: bool = True):
    """
    `preprocess_logits_for_metrics` for `Trainer`: patch logits `(B, C, h, w)` -> class ids at the mask size
    `(B, H, W)` (int32), per batch, so that only small integer maps are gathered. With `mask_by_image_labels`
    the image-level labels suppress absent classes and each present class is max-normalised (pseudo-label
    quality, as in ViT-PCM's validation); without, it is the plain argmax.
    """

    def preprocess_logits_for_metrics(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        image_labels, masks = (labels[0], labels[-1]) if isinstance(labels, (tuple, list)) else (None, labels)
        probabilities = class_probability_maps(
            logits, image_labels if mask_by_image_labels else None, target_size=tuple(masks.shape[-2:])
        )
        return probabilities.argmax(dim=1).to(torch.int32)

    return preprocess_logits_for_metrics


class EvalPicturesCallback(TrainerCallback):
    """
    After each evaluation with a mIoU, draws what a person looks at: the per-class IoU as a bar plot, and the first
    `num_examples` validation images as panels (image | ground truth | pseudo-label). The PNGs go to
    `output_dir/eval_pictures/step-N/` and, when TensorBoard logging is on, into TensorBoard.
    """

    def __init__(self, trainer: Trainer, num_examples: int = 4):
        self.trainer = trainer
        self.num_examples = num_examples

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        trainer = self.trainer
        if not metrics or "eval_mean_iou" not in metrics or not trainer.is_world_process_zero():
            return
        from PIL import Image

        from .visualization import plot_per_class_iou, save_overlay_panels

        model = trainer.accelerator.unwrap_model(trainer.model)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        directory = os.path.join(args.output_dir, "eval_pictures", f"step-{state.global_step}")
        iou = [metrics.get(f"eval_iou_{name}") for name in names]
        paths = {
            "per_class_iou": plot_per_class_iou(
                os.path.join(directory, "per_class_iou.png"),
                {"pseudo-label": iou},
                names,
                title=f"step {state.global_step}",
            )
        }
        paths.update(self._example_panels(model, names, directory, save_overlay_panels))
        writer = next(
            (
                getattr(cb, "tb_writer", None)
                for cb in trainer.callback_handler.callbacks
                if getattr(cb, "tb_writer", None)
            ),
            None,
        )
        if writer is not None:
            for tag, path in paths.items():
                picture = np.asarray(Image.open(path).convert("RGB"))
                writer.add_image(f"eval/{tag}", picture, state.global_step, dataformats="HWC")
            writer.flush()

    def _example_panels(self, model, names, directory, save_overlay_panels) -> dict:
        dataset = self.trainer.eval_dataset
        if dataset is None or self.num_examples <= 0:
            return {}
        processor = self.trainer.processing_class
        mean = torch.tensor(getattr(processor, "image_mean", (0.5, 0.5, 0.5))).view(3, 1, 1)
        std = torch.tensor(getattr(processor, "image_std", (0.5, 0.5, 0.5))).view(3, 1, 1)
        paths = {}
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for index in range(min(self.num_examples, len(dataset))):
                item = dataset[index]
                if "masks" not in item:
                    break
                pixel_values = item["pixel_values"][None].to(device)
                logits = model(pixel_values).logits
                prediction = class_probability_maps(
                    logits, item["labels"][None].to(device), tuple(item["masks"].shape)
                )
                image = ((item["pixel_values"] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
                path = os.path.join(directory, f"example_{index}.png")
                panels = {"ground truth": item["masks"].numpy(), "pseudo-label": prediction.argmax(1)[0].cpu().numpy()}
                paths[f"example_{index}"] = save_overlay_panels(path, image.numpy(), panels, names)
        model.train(was_training)
        return paths


class ConvertedCheckpointMixin:
    """
    Makes `Trainer` resume from and reload its best checkpoint through `from_pretrained`.

    transformers 5.x saves some models' weights under their original names (for ViT: `encoder.layer.N.attention...`)
    and renames them when `from_pretrained` loads them; `Trainer`'s own loaders read the weight file raw, which
    would leave the encoder of a resumed run, or of `load_best_model_at_end`, silently un-loaded. Here the
    checkpoint goes through `from_pretrained` and is loaded strictly.
    """

    def _load_converted_checkpoint(self, checkpoint: str, model=None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        loaded = type(target).from_pretrained(checkpoint, config=target.config)
        target.load_state_dict(loaded.state_dict(), strict=True)
        logger.info(f"Loaded model weights from {checkpoint}.")

    def _uses_plain_checkpoints(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._uses_plain_checkpoints():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_converted_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._uses_plain_checkpoints():
            return super()._load_best_model()
        logger.info(f"Loading best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric}).")
        self._load_converted_checkpoint(self.state.best_model_checkpoint)


class FiniteLossMixin:
    """
    `compute_loss` that feeds the model only its inputs (`model_input_names`; batches also carry e.g. `masks` for
    the metrics) and stops the run with a clear message, naming the step, when the training loss is NaN or inf.
    """

    model_input_names: tuple[str, ...] = MODEL_INPUT_NAMES

    def model_loss(self, model, inputs):
        """(loss, outputs) of one batch: the model's own loss. Trainers with extra loss terms override this."""
        outputs = model(**{name: inputs[name] for name in self.model_input_names if name in inputs})
        return outputs.loss, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = self.model_loss(model, inputs)
        if model.training and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.state.global_step + 1} (epoch "
                f"{self.state.epoch or 0:.2f}); stopping instead of training on garbage. Lower the learning rate, "
                f"check the inputs for NaN/inf, or resume from the last checkpoint in {self.args.output_dir}."
            )
        return (loss, outputs) if return_outputs else loss


def equivariance_target(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    view_flips: torch.Tensor,
    et_flips: torch.Tensor,
    et_boxes: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """
    ViT-PCM's L_ET target (`model.py` `compute_cce_loss`): the full view's patch probabilities `(B, C, h, w)` with
    the full view's flips undone, the second view's crop (`et_boxes`, in patches) and resize to `size` and its flips
    applied at patch level, then `merge_class_labels` with the image labels `(B, C)`. Returns `(B, C, *size)`.
    """
    canonical = revert_flips(probabilities, view_flips)
    return merge_class_labels(apply_flips(crop_and_resize(canonical, et_boxes, size), et_flips), labels)


def equivariance_loss(target: torch.Tensor, predicted: torch.Tensor, epsilon: float = 1e-7) -> torch.Tensor:
    """
    Keras' categorical cross-entropy between the target `(B, C, s, s)` (no gradient) and the predicted patch
    probabilities of the second views `(B, C, s, s)`: `-sum_c t log clip(p, eps, 1 - eps)` per patch, mean over
    patches and images.
    """
    predicted = predicted.float()
    predicted = predicted / predicted.sum(dim=1, keepdim=True)
    return -(target.detach().float() * predicted.clamp(epsilon, 1.0 - epsilon).log()).sum(dim=1).mean()


class EquivarianceLossMixin:
    """
    Adds ViT-PCM's L_ET to the model's loss when `args.equivariance_loss_weight > 0` and the batch carries the second
    views (`EquivarianceTrainTransform`):

    1. target: the model in eval mode (no dropout), without gradient, on the full views; `equivariance_target`;
    2. prediction: every 4 second views tiled into one mosaic (`make_mosaics`), run in training mode in the same
       forward call as the full views (one call, so DDP sees each parameter once), split back into views;
    3. loss = BCE + L2 (on the full views, the model's own) + weight * `equivariance_loss`.

    A batch of B images makes B // 4 mosaics; the remaining B % 4 images (a short last batch) get no L_ET term.
    """

    def model_loss(self, model, inputs):
        weight = self.args.equivariance_loss_weight
        if weight <= 0 or not model.training or "et_pixel_values" not in inputs:
            return super().model_loss(model, inputs)
        core = self.accelerator.unwrap_model(model)
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        batch_size = pixel_values.shape[0]
        used = 4 * (batch_size // 4)
        if used == 0:
            return super().model_loss(model, inputs)
        with torch.no_grad():
            core.eval()
            try:
                full = core(pixel_values=pixel_values[:used]).logits.float().softmax(dim=1)
            finally:
                core.train()
        mosaics = make_mosaics(inputs["et_pixel_values"][:used])
        if mosaics.shape[-2:] != pixel_values.shape[-2:]:
            raise ValueError(
                f"The L_ET mosaics are {tuple(mosaics.shape[-2:])} but the images {tuple(pixel_values.shape[-2:])}: "
                "the second views must be half the training size."
            )
        outputs = model(pixel_values=torch.cat([pixel_values, mosaics]))
        loss = core.compute_loss(outputs.image_scores[:batch_size], labels)
        predicted = split_mosaics(outputs.logits[batch_size:].float().softmax(dim=1))
        target = equivariance_target(
            full,
            labels[:used],
            inputs["view_flips"][:used],
            inputs["et_flips"][:used],
            inputs["et_box"][:used],
            tuple(predicted.shape[-2:]),
        )
        outputs.logits, outputs.image_scores = outputs.logits[:batch_size], outputs.image_scores[:batch_size]
        return loss + weight * equivariance_loss(target, predicted), outputs


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
    "ConvertedCheckpointMixin",
    "CPFCTETrainer",
    "CPFCTETrainingArguments",
    "EquivarianceLossMixin",
    "EvalPicturesCallback",
    "FiniteLossMixin",
    "SegmentationEvalMetrics",
    "StageLearningRate",
    "TwoStageScheduleCallback",
    "encoder_parameter_groups",
    "equivariance_loss",
    "equivariance_target",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "make_preprocess_logits_for_metrics",
    "resolve_resume_checkpoint",
]
