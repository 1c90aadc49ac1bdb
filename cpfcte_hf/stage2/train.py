# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`scripts/train_deeplab.py` as a library: its arguments, and the run (train, save, multi-scale + CRF evaluation).

    python scripts/train_deeplab.py --config deeplab_voc \
        --data_root data/VOCdevkit/VOC2012 --pseudo_labels pseudo/voc_train_aug --output_dir runs/deeplab_voc
    accelerate launch --num_processes 2 scripts/train_deeplab.py --config ...      # DDP; same flags

Arguments are four dataclasses parsed together (`cpfcte_hf.utils.arguments.parse_args_with_presets`: YAML preset, then the
command line): `DeepLabDataArguments`, `DeepLabModelArguments`, `DeepLabTestArguments` (+ the CRF parameters as
`crf_<field>`) and `DeepLabV2TrainingArguments` (every `TrainingArguments` option plus the DeepLab recipe).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path

import torch
from transformers import AutoModelForSemanticSegmentation, default_data_collator, set_seed

from ..data import load_split
from ..evaluation.report import format_report
from ..models.cpfcte.class_names import dataset_class_names
from ..models.deeplab_v2.configuration_deeplab import DeepLabV2Config, resnet101_config
from ..models.deeplab_v2.modeling_deeplab import DeepLabV2ForSemanticSegmentation
from ..models.deeplab_v2.processing import IMAGENET_MEAN, IMAGENET_STD, deeplab_image_processor
from ..models.segmenters import (
    DEEPLAB_MODEL_TYPE,
    build_segmenter,
    parse_config_overrides,
    resolve_model_type,
    segmenter_config,
    segmenter_image_processor,
    segmenter_model_types,
)
from ..prediction.config import MultiScaleEvalConfig, config_from_options
from ..prediction.segment import predict_split, stage2_model_info
from ..utils.arguments import describe, print_error
from ..utils.distributed import distributed_state, finish_distributed
from ..utils.io import atomic_write_text
from ..utils.precision import precision_line
from ..utils.trainer_mixins import resolve_resume_checkpoint
from .arguments import (
    DeepLabDataArguments,
    DeepLabModelArguments,
    DeepLabTestArguments,
    DenseCRFArguments,
    crf_config_from,
    parse_arguments,
)
from .checks import check_stage2_inputs, resolve_pseudo_label_dir, splits_to_load
from .dataset import PseudoLabelTransform, augmented_pairs, leave_out_rejected, pseudo_label_dataset
from .trainer import DeepLabV2Trainer, DeepLabV2TrainingArguments


logger = logging.getLogger(__name__)


def channels_last_collator(features):
    """`default_data_collator` with the images' batch in channels-last memory order: oneDNN's convolutions and max
    pooling run faster in it on CPUs (0.96x the time of a demo stage-2 step), and the layers after the first follow the
    input's order. The same computation; only the rounding can differ."""
    batch = default_data_collator(features)
    batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
    return batch


def build_model(model_args: DeepLabModelArguments, class_names: list[str], new_head_allowed: bool = True):
    """The model to train: another architecture than DeepLab-v2 through `segmenter.build_segmenter`; DeepLab-v2 from
    `model_name_or_path`, else ImageNet `backbone` + a fresh ASPP, else random."""
    if resolve_model_type(model_args.model_type, model_args.model_name_or_path) != DEEPLAB_MODEL_TYPE:
        return build_segmenter(
            class_names,
            model_args.model_type,
            model_args.model_name_or_path,
            model_args.config_overrides,
            new_head_allowed=new_head_allowed,
        )
    id2label = dict(enumerate(class_names))
    if model_args.model_name_or_path:
        model = DeepLabV2ForSemanticSegmentation.from_pretrained(model_args.model_name_or_path)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if names != list(class_names):
            raise ValueError(
                f"{model_args.model_name_or_path} predicts classes {names[:6]}... ({len(names)}), the dataset has "
                f"{list(class_names)[:6]}... ({len(class_names)})."
            )
        return model
    head = dict(
        id2label=id2label,
        output_stride=model_args.output_stride,
        atrous_rates=list(model_args.atrous_rates),
        freeze_batch_norm=model_args.freeze_batch_norm,
    )
    if model_args.init_checkpoint:
        from ..models.deeplab_v2.convert import load_kazuto_checkpoint

        return load_kazuto_checkpoint(model_args.init_checkpoint, **head)
    if model_args.backbone and model_args.backbone.lower() != "none":
        return DeepLabV2ForSemanticSegmentation.from_pretrained_backbone(model_args.backbone, **head)
    backbone_config = resnet101_config(
        depths=list(model_args.resnet_depths),
        hidden_sizes=list(model_args.resnet_hidden_sizes),
        embedding_size=model_args.resnet_embedding_size,
        layer_type=model_args.resnet_layer_type,
    )
    logger.warning("No --backbone: the ResNet starts from random weights (fine for toy data, not for VOC/COCO).")
    return DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone_config=backbone_config, **head))


def check_deeplab_inputs(
    data_args: DeepLabDataArguments,
    model_args: DeepLabModelArguments,
    training_args: DeepLabV2TrainingArguments,
    *,
    load_train: bool | None = None,
    load_eval: bool | None = None,
    turn_off_bf16: str = "--bf16 false",
    made_earlier: Collection[str] = (),
) -> None:
    """
    What a stage-2 start can get wrong, checked before anything is loaded, built or written; the first problem is
    reported, in one line naming the option or path: the inputs the front door also checks without transformers
    (`stage2.checks.check_stage2_inputs`: data, pseudo-labels, the model's location), the architecture
    (`--model_type`, `--config_overrides`), and bf16 on a machine without it (`turn_off_bf16`: how to turn it off,
    in the caller's words). Paths in `made_earlier` are made by an earlier step of a run (`cpfcte-hf run`) and not
    checked.
    """
    check_stage2_inputs(
        data_args,
        model_args,
        training_args.do_train,
        load_train=load_train,
        load_eval=load_eval,
        made_earlier=made_earlier,
    )
    _check_architecture(model_args)
    if training_args.do_train:
        training_args.check_precision(turn_off_bf16)


def _check_architecture(model_args: DeepLabModelArguments) -> None:
    """For another architecture than DeepLab-v2: a known `--model_type`, no DeepLab `.pth`, readable
    `--config_overrides` that its config takes; for DeepLab-v2: no `--config_overrides`."""
    if model_args.model_type and model_args.model_type not in segmenter_model_types():
        resolve_model_type(model_args.model_type, None)  # the one-line error listing the architectures
    if model_args.model_type and model_args.model_type != DEEPLAB_MODEL_TYPE:
        if model_args.init_checkpoint:
            raise ValueError(f"--init_checkpoint is a DeepLab-v2 .pth; it cannot start a {model_args.model_type}.")
        if not model_args.model_name_or_path:  # the config it builds: a bad override is found before the data loads
            segmenter_config(model_args.model_type, ["background"], model_args.config_overrides)
        parse_config_overrides(model_args.config_overrides)
    elif model_args.model_type == DEEPLAB_MODEL_TYPE and parse_config_overrides(model_args.config_overrides):
        raise ValueError("--config_overrides is for other architectures: DeepLab-v2 has its own options (--help).")


def load_datasets(data_args, model_args, training_args, train_dataset=None, eval_dataset=None):
    """The training and evaluation splits of the run (those not handed over are loaded, on the main process first),
    cut to `max_train_samples` / `max_eval_samples`; None where the run needs none."""
    load_train, load_eval = splits_to_load(data_args, model_args, training_args.do_train, train_dataset, eval_dataset)
    with training_args.main_process_first(desc="loading the dataset splits"):
        options = data_args.loader_options()
        if load_train:
            train_dataset = load_split(data_args.dataset, data_args.data_root, data_args.train_split, **options)
        if load_eval:
            eval_dataset = load_split(data_args.dataset, data_args.data_root, data_args.eval_split, **options)
    if train_dataset is not None and data_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
    if eval_dataset is not None and data_args.max_eval_samples:
        eval_dataset = eval_dataset.select(range(min(len(eval_dataset), data_args.max_eval_samples)))
    return train_dataset, eval_dataset


def build_image_processor(model, model_args: DeepLabModelArguments):
    """DeepLab-v2's processor, else transformers' own image processor for the architecture, with the statistics
    training uses."""
    if model.config.model_type == DEEPLAB_MODEL_TYPE:
        return deeplab_image_processor(model_args.image_size)
    return segmenter_image_processor(model, model_args.image_size, IMAGENET_MEAN, IMAGENET_STD)


def build_train_set(
    data_args: DeepLabDataArguments, training_args: DeepLabV2TrainingArguments, dataset, model, processor
):
    """The training split's images paired with their pseudo-labels (`pseudo_label_dataset`, less the images rejected
    in review), augmented by `PseudoLabelTransform` (`augmented_pairs`); and how many images review rejected."""
    mask_dir = resolve_pseudo_label_dir(data_args.pseudo_labels, data_args.pseudo_label_set)
    dataset, rejected = leave_out_rejected(dataset, mask_dir)
    options = data_args.loader_options()
    with training_args.main_process_first(desc="pairing the images with their pseudo-labels"):
        pairs = pseudo_label_dataset(
            dataset,
            mask_dir,
            num_labels=model.config.num_labels,
            ignore_index=model.config.semantic_loss_ignore_index,
            cache_dir=options.get("cache_dir"),
            num_proc=options.get("num_proc"),
        )
    transform = PseudoLabelTransform(
        crop_size=training_args.crop_size,
        scale_range=(training_args.min_scale, training_args.max_scale),
        flip_prob=training_args.flip_prob,
        vflip_prob=training_args.vflip_prob,
        transpose_prob=training_args.transpose_prob,
        image_mean=processor.image_mean,
        image_std=processor.image_std,
        ignore_index=model.config.semantic_loss_ignore_index,
    )
    return augmented_pairs(pairs, transform), rejected


def train_model(model, processor, train_set, eval_dataset, training_args, run_args: str, resume: str | None = None):
    """Trains `model` on `train_set` (from the checkpoint `resume`, if any), saves it with `processor` and the run's
    options (`run_args`, the text of `run_args.json`); returns the training metrics and the model as saved."""
    output_dir = Path(training_args.output_dir)
    if training_args.should_log:
        print(training_args.train_batch_plan.line(), flush=True)
        print(precision_line(training_args), flush=True)
    if training_args.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "run_args.json", run_args + "\n")
    trainer = DeepLabV2Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_dataset if training_args.eval_strategy != "no" else None,
        processing_class=processor,
        data_collator=channels_last_collator,
    )
    train_output = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    # Predict with the weights as saved, on every process: under DDP each rank's BatchNorm running statistics are its
    # own after the last step, and only rank 0's were saved.
    trainer.accelerator.wait_for_everyone()
    return train_output.metrics, AutoModelForSemanticSegmentation.from_pretrained(str(output_dir))


def evaluate_model(model, processor, eval_dataset, data_args, model_args, test_args, crf_args, training_args) -> dict:
    """`predict_split` of `model` over the evaluation split at the test scales (and the CRF), into
    `<output_dir>/predictions/<split>/`; its counts and report are printed on the main process."""
    output_dir = Path(training_args.output_dir)
    config = config_from_options(MultiScaleEvalConfig, test_args, prefix="test_", crf_config=crf_config_from(crf_args))
    split = data_args.eval_split or "eval"
    # The folder of the weights scored, whose training files the report records: this run's, or the checkpoint's.
    model_dir = output_dir if training_args.do_train else model_args.model_name_or_path
    model = model.to(training_args.device)
    prediction = predict_split(
        model,
        eval_dataset,
        output_dir / "predictions" / split,
        config,
        image_processor=processor,
        dataset_name=data_args.dataset,
        split=split,
        model_info=stage2_model_info(model, model_dir),
        data_root=data_args.data_root,
    )
    if training_args.process_index == 0:
        _print_prediction(prediction, len(eval_dataset), split, output_dir / "predictions" / split)
    return prediction


def _print_prediction(prediction: dict, num_images: int, split: str, prediction_dir: Path) -> None:
    failed = prediction["failed"]
    print(
        f"{num_images} image(s) of {split}: {prediction['written']} written, "
        f"{prediction['already_done']} already done, {len(failed)} failed, {len(prediction['changed'])} "
        "changed since their masks were made (recomputed)"
        + (f" (e.g. {failed[0][0]}: {failed[0][1]})" if failed else "")
    )
    if prediction["report"] is not None:
        print(format_report(prediction["report"]))
        print(f"Report in {prediction_dir / 'report'}")
    if prediction["report_html"]:
        print(f"Every image and its masks, to look at: {prediction['report_html']}")


def run_deeplab(
    data_args: DeepLabDataArguments,
    model_args: DeepLabModelArguments,
    test_args: DeepLabTestArguments,
    crf_args,
    training_args: DeepLabV2TrainingArguments,
    train_dataset=None,
    eval_dataset=None,
) -> dict:
    """
    Trains DeepLab-v2 on the pseudo-labels (with `training_args.do_train`), saves it (model + image processor, so
    that `pipeline("image-segmentation", model=output_dir)` works), and evaluates it on `eval_split` at the test
    scales with the CRF. `train_dataset` / `eval_dataset` (`datasets.Dataset`) replace loading the splits.

    Returns `{"train": train metrics | None, "report": the evaluation report | None, "prediction": the counts of
    `predict_split` over the whole split | None, "model_dir": output_dir}` (+ `"rejected"`: images left out of
    training by review).
    """
    resume = None
    if training_args.do_train:  # a bad --resume_from_checkpoint fails before the data is loaded
        resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    load_train, load_eval = splits_to_load(data_args, model_args, training_args.do_train, train_dataset, eval_dataset)
    check_deeplab_inputs(data_args, model_args, training_args, load_train=load_train, load_eval=load_eval)
    train_dataset, eval_dataset = load_datasets(data_args, model_args, training_args, train_dataset, eval_dataset)
    # The fresh ASPP (and a random backbone) start from --seed, as stage 1's model does: not from whatever state the
    # random generator was left in (in `cpfcte-hf run`, by the steps before; alone, torch's default seed).
    set_seed(training_args.seed)
    class_names = dataset_class_names(train_dataset if train_dataset is not None else eval_dataset)
    model = build_model(model_args, class_names, new_head_allowed=training_args.do_train)
    processor = build_image_processor(model, model_args)
    result = {"train": None, "report": None, "prediction": None, "model_dir": str(Path(training_args.output_dir))}
    if training_args.do_train:
        train_set, result["rejected"] = build_train_set(data_args, training_args, train_dataset, model, processor)
        run_args = describe(data_args, model_args, test_args, crf_args, training_args)
        result["train"], model = train_model(
            model, processor, train_set, eval_dataset, training_args, run_args, resume
        )
    if eval_dataset is not None:
        prediction = evaluate_model(
            model, processor, eval_dataset, data_args, model_args, test_args, crf_args, training_args
        )
        result["report"] = prediction["report"]
        result["prediction"] = {key: value for key, value in prediction.items() if key != "report"}
    if training_args.process_index == 0 and result["train"] is not None:
        print(json.dumps(result["train"], indent=2))
    return result


def main(argv=None, prog: str = "cpfcte-hf train-deeplab") -> int:
    return run_parsed(*parse_arguments(argv, prog))


def run_parsed(data_args, model_args, test_args, crf_args, training_args) -> int:
    """`train-deeplab` with parsed arguments: the run, a bad input as one line (status 2)."""
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    try:
        run_deeplab(data_args, model_args, test_args, crf_args, training_args)
    except (OSError, ValueError) as error:  # bad arguments or inputs: a clear message, no traceback
        print_error(error)
        return 2
    finish_distributed(distributed_state())  # as pseudo_label.py: tear the process group down before exiting
    return 0


__all__ = [
    "DeepLabDataArguments",
    "DeepLabModelArguments",
    "DeepLabTestArguments",
    "DenseCRFArguments",
    "build_model",
    "check_deeplab_inputs",
    "crf_config_from",
    "main",
    "parse_arguments",
    "run_parsed",
    "run_deeplab",
]
