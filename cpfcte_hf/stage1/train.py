# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The stage-1 training recipe behind `scripts/train.py`: model + data + `CPFCTETrainer`, from three dataclasses.

    accelerate launch scripts/train.py --config voc
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config shapes

The dataset is an argument (`--dataset voc|coco|shapes|tagged|hub`), never a copied script. The output directory
ends up holding a checkpoint that `from_pretrained` and `pipeline("image-segmentation")` load directly (weights,
config, image processor, source files), the checkpoints of the run, `run_config.json`, `train_results.json`,
`eval_results.json` and TensorBoard logs.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import AutoConfig, ViTConfig, set_seed
from transformers.utils import logging

from ..data import (
    EvalTransform,
    TrainTransform,
    WeakSegmentationCollator,
    build_dataset,
    class_names_of,
)
from ..data.transforms import (
    EquivarianceCollator,
    EquivarianceTrainTransform,
    EquivarianceViewConfig,
)
from ..evaluation.results import training_results_record, write_results
from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig, backbone_config_from
from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
from ..models.cpfcte.inference import DEFAULT_INFERENCE_SIZE
from ..models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation
from ..utils.arguments import describe
from ..utils.precision import precision_line
from ..utils.trainer_mixins import resolve_resume_checkpoint
from .arguments import DataArguments, ModelArguments, check_data_and_model, check_one_model_source
from .trainer import CPFCTETrainer, CPFCTETrainingArguments


logger = logging.get_logger(__name__)


def build_datasets(data_args: DataArguments):
    """(train, eval or None) `datasets.Dataset`s for `data_args`."""
    options = data_args.loader_options()

    def load(split):
        try:
            return build_dataset(data_args.dataset, data_args.data_root, split, **options)
        except TypeError as error:
            if "unexpected keyword argument" not in str(error):
                raise
            raise ValueError(
                f"--dataset_option {sorted(options)} does not fit the {data_args.dataset!r} loader: {error}"
            ) from error

    train = load(data_args.train_split)
    evaluation = load(data_args.eval_split) if data_args.eval_split else None
    if evaluation is not None:
        evaluation = with_masks_only(evaluation, f"{data_args.dataset} split {data_args.eval_split!r}")
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if evaluation is not None and data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def with_masks_only(dataset, name: str):
    """The rows of `dataset` that have a ground-truth mask, or None when none has (one log line says so).

    A split without masks (e.g. a tagged folder, whose loader returns the same images for any split name) cannot be
    evaluated: scoring it would only repeat the training loss on the training images.
    """
    if "mask" not in dataset.column_names:
        logger.warning(f"The {name} has no ground-truth masks: no evaluation during training (mIoU needs masks).")
        return None
    table = dataset.select_columns(["mask"]).with_format("arrow")[:]  # honours a `select`'s indices, decodes nothing
    present = [i for i, value in enumerate(table.column("mask").is_valid().to_pylist()) if value]
    if not present:
        logger.warning(f"The {name} has no ground-truth masks: no evaluation during training (mIoU needs masks).")
        return None
    if len(present) < len(dataset):
        logger.warning(
            f"The {name}: {len(dataset) - len(present)} of {len(dataset)} images have no mask; evaluating on the "
            f"{len(present)} with masks."
        )
        dataset = dataset.select(present)
    return dataset


def _encoder_patch_size(model_args: ModelArguments) -> int:
    """The patch size of the encoder `build_model` will make, read from a config (no weights are loaded)."""
    if model_args.model_name_or_path:
        return CPFCTEConfig.from_pretrained(model_args.model_name_or_path).patch_size
    if model_args.backbone:
        patch = backbone_config_from(AutoConfig.from_pretrained(model_args.backbone)).patch_size
        return patch if isinstance(patch, int) else patch[0]
    return model_args.patch_size


def equivariance_views(model_args: ModelArguments, data_args: DataArguments, patch: int) -> EquivarianceViewConfig:
    """The second views of L_ET for this training size and patch (unset sizes: ViT-PCM's proportions), checked
    against the training size."""
    views = EquivarianceViewConfig(
        crop_p=data_args.et_crop_p,
        crop_size=data_args.et_crop_size or max(patch, round(model_args.image_size / 3 / patch) * patch),
        scale_size=data_args.et_scale_size or model_args.image_size // 2,
        patch_size=patch,
    )
    views.check_training_size(model_args.image_size)
    return views


def check_training_inputs(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CPFCTETrainingArguments,
    turn_off_bf16: str = "--bf16 false",
) -> None:
    """
    What a training start can get wrong, checked before anything is loaded, built or written, in this order (the
    first problem is the one reported, in one line naming the option or path): the data (loader options, root,
    split files: `check_dataset`), the model (`--model_name_or_path` / `--backbone`), options that contradict each
    other, and bf16 on a machine without it (`turn_off_bf16`: how to turn it off, in the caller's words).
    """
    check_data_and_model(model_args, data_args)
    patch = _encoder_patch_size(model_args)
    if model_args.image_size % patch:
        nearest = max(1, round(model_args.image_size / patch)) * patch
        raise ValueError(
            f"--image_size {model_args.image_size} is not a multiple of the encoder's patch size {patch} "
            f"(e.g. {nearest})."
        )
    if training_args.equivariance_loss_weight > 0:
        if not data_args.augment:
            raise ValueError("--equivariance_loss_weight > 0 needs the training augmentation (--augment true).")
        equivariance_views(model_args, data_args, patch)
    training_args.check_precision(turn_off_bf16)


# `ModelArguments` fields passed under their own names: to `CPFCTEConfig` (the heads), to `ViTConfig` (an encoder
# trained from scratch).
_HEAD_OPTIONS = (
    "use_class_tokens",
    "use_context_fusion",
    "pooling",
    "context_fusion_residual",
    "context_fusion_projection",
    "context_fusion_dropout",
    "context_fusion_projection_dropout",
    "context_fusion_lstm_dropout_mode",
    "classifier_dropout",
    "classifier_l2_weight",
)
_VIT_OPTIONS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
)


def build_model(model_args: ModelArguments, class_names: list[str]) -> CPFCTEForWeaklySupervisedSegmentation:
    """The model of `model_args` for these classes (background first)."""
    id2label = dict(enumerate(class_names))
    head_kwargs = dict(
        id2label=id2label,
        inference_size=model_args.inference_size or DEFAULT_INFERENCE_SIZE,
        pooling_top_k=int(model_args.top_k) if float(model_args.top_k).is_integer() else float(model_args.top_k),
        **{name: getattr(model_args, name) for name in _HEAD_OPTIONS},
    )
    attn = {"attn_implementation": model_args.attn_implementation}
    check_one_model_source(model_args)
    if model_args.model_name_or_path:
        model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(model_args.model_name_or_path, **attn)
        if model.config.id2label != id2label:
            raise ValueError(
                f"{model_args.model_name_or_path} was trained on classes {list(model.config.id2label.values())}, "
                f"the dataset has {class_names}."
            )
        set_encoder_dropout(model, model_args.hidden_dropout_prob, model_args.attention_probs_dropout_prob)
        if model_args.inference_size is not None:
            model.config.inference_size = model_args.inference_size
        return model
    if model_args.backbone:
        backbone_hidden = backbone_config_from(AutoConfig.from_pretrained(model_args.backbone)).hidden_size
        head_kwargs["lstm_hidden_size"] = model_args.lstm_hidden_size or backbone_hidden // 4
        model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
            model_args.backbone, **head_kwargs, **attn
        )
        set_encoder_dropout(model, model_args.hidden_dropout_prob, model_args.attention_probs_dropout_prob)
        return model
    backbone_config = ViTConfig(
        **{name: getattr(model_args, name) for name in _VIT_OPTIONS},
        **{
            name: value
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")
            if (value := getattr(model_args, name)) is not None
        },
    )
    head_kwargs["lstm_hidden_size"] = model_args.lstm_hidden_size or model_args.hidden_size // 4
    model = CPFCTEForWeaklySupervisedSegmentation(CPFCTEConfig(backbone_config=backbone_config, **head_kwargs))
    model.set_attn_implementation(model_args.attn_implementation)
    return model


def set_encoder_dropout(
    model: CPFCTEForWeaklySupervisedSegmentation, hidden: float | None, attention: float | None
) -> None:
    """
    Sets the ViT encoder's dropout rates of a built model (config and modules alike); None keeps a rate.

    `hidden` is `hidden_dropout_prob` (embeddings, after attention, after the MLP), `attention` is
    `attention_probs_dropout_prob` (on the attention weights). A ViT loaded from a checkpoint keeps that
    checkpoint's rates otherwise (0.0 for google/vit-base-patch16-384; vit-keras, which ViT-PCM trains, uses 0.1).
    """
    backbone_config = model.config.backbone_config
    for name, value in (("hidden_dropout_prob", hidden), ("attention_probs_dropout_prob", attention)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"--{name} must be in [0, 1), got {value}.")
    if hidden is not None:
        backbone_config.hidden_dropout_prob = hidden
        for module in model.vit.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = hidden
    if attention is not None:
        backbone_config.attention_probs_dropout_prob = attention
        for module in model.vit.modules():
            if hasattr(module, "attention_dropout"):
                module.attention_dropout = attention


def build_processor(model_args: ModelArguments) -> CPFCTEImageProcessor:
    """The image processor of the run, at the training size."""
    size = {"height": model_args.image_size, "width": model_args.image_size}
    # A pretrained encoder reads images normalised as in its pretraining (e.g. ImageNet statistics for DINOv2).
    if model_args.backbone and not model_args.model_name_or_path:
        return CPFCTEImageProcessor.for_backbone(model_args.backbone, size=size)
    return CPFCTEImageProcessor(size=size)


def build_train_transform(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: CPFCTETrainingArguments,
    processor: CPFCTEImageProcessor,
    num_labels: int,
    patch: int,
):
    """
    `(transform, collator, batch_augmentation)` of the training set: with L_ET its second views, else the
    augmentation (in the loader, or `batch_augmentation` on the training device after the transfer), else none.
    """
    if training_args.equivariance_loss_weight > 0:
        views = equivariance_views(model_args, data_args, patch)
        transform = EquivarianceTrainTransform(
            num_labels, processor, augmentation=data_args.augmentation_config(), views=views
        )
        return transform, EquivarianceCollator(num_labels), None
    collator = WeakSegmentationCollator(num_labels)
    if not data_args.augment:
        return EvalTransform(num_labels, processor, with_masks=False), collator, None
    on_device = training_args.resolved_augmentation_device() == "device"
    transform = TrainTransform(
        num_labels,
        processor,
        augmentation=data_args.augmentation_config(),
        augment_in_loader=not on_device,
        rank=training_args.process_index,  # each rank (and loader worker) draws its own augmentations
    )
    return transform, collator, transform.batch_augmentation if on_device else None


def _evaluate_without_masks(training_args: CPFCTETrainingArguments, has_eval_dataset: bool) -> None:
    """Without ground truth there is no mIoU: evaluate the loss only (if anything), and keep the last checkpoint."""
    training_args.label_names = ["labels"]
    if training_args.metric_for_best_model == "mean_iou":
        training_args.metric_for_best_model = "loss" if has_eval_dataset else None
        training_args.greater_is_better = False
    if not has_eval_dataset:
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False


def _train_save_evaluate(trainer, resume, evaluate: bool, class_names, model_args, data_args) -> None:
    """Trains (from `resume`, if any), saves the model, state and metrics, then evaluates (`evaluate`)."""
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if evaluate:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero() and "eval_mean_iou" in metrics:  # the card's "trainer validation" row
            record = training_results_record(
                metrics,
                class_names,
                dataset=data_args.dataset,
                split=data_args.eval_split,
                data_root=data_args.data_root,
                model=os.path.abspath(trainer.args.output_dir),
                settings=json.loads(describe(model_args, data_args, trainer.args)),
            )
            write_results(record, trainer.args.output_dir)
    if trainer.is_world_process_zero():
        print(f"Saved the model to {os.path.abspath(trainer.args.output_dir)}", flush=True)
        print(json.dumps({"best_checkpoint": trainer.state.best_model_checkpoint}), flush=True)


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: CPFCTETrainingArguments
) -> CPFCTETrainer:
    """
    Checks the inputs (`check_training_inputs`), builds everything, trains (resuming if asked), saves the final
    model and its processor; returns the trainer. The resolved settings go to OUTPUT_DIR/run_config.json, not to
    the console (`--print_config` prints them).
    """
    set_seed(training_args.seed)
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_training_inputs(model_args, data_args, training_args)
    if training_args.should_log:
        print(f"Outputs: {os.path.abspath(training_args.output_dir)} (resolved settings: run_config.json)", flush=True)
        print(training_args.train_batch_plan.line(), flush=True)
        print(precision_line(training_args), flush=True)

    # Every process says where it runs, so a multi-process launch shows all its ranks.
    print(
        f"[rank {training_args.process_index}/{training_args.world_size}] device {training_args.device}",
        flush=True,
    )
    train_dataset, eval_dataset = build_datasets(data_args)
    class_names = class_names_of(train_dataset)
    num_labels = len(class_names)
    processor = build_processor(model_args)
    model = build_model(model_args, class_names)

    train_transform, collator, batch_augmentation = build_train_transform(
        model_args, data_args, training_args, processor, num_labels, model.config.patch_size
    )
    train_dataset = train_dataset.with_transform(train_transform)
    has_masks = eval_dataset is not None and "mask" in eval_dataset.column_names
    if eval_dataset is not None:
        eval_dataset = eval_dataset.with_transform(EvalTransform(num_labels, processor, with_masks=has_masks))
    if not has_masks:
        _evaluate_without_masks(training_args, eval_dataset is not None)

    trainer = CPFCTETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        batch_augmentation=batch_augmentation,
    )
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "run_config.json"), "w") as handle:
            handle.write(describe(model_args, data_args, training_args) + "\n")

    _train_save_evaluate(trainer, resume, eval_dataset is not None, class_names, model_args, data_args)
    return trainer


__all__ = [
    "DataArguments",
    "ModelArguments",
    "build_datasets",
    "build_model",
    "check_training_inputs",
    "run_training",
    "set_encoder_dropout",
    "with_masks_only",
]
