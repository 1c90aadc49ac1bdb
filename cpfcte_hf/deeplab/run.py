# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`scripts/train_deeplab.py` as a library: its arguments, and the run (train, save, multi-scale + CRF evaluation).

    python scripts/train_deeplab.py --config scripts/configs/deeplab_voc.yaml \
        --data_root data/VOCdevkit/VOC2012 --pseudo_labels pseudo/voc_train_aug --output_dir runs/deeplab_voc
    accelerate launch --num_processes 2 scripts/train_deeplab.py --config ...      # DDP; same flags

Arguments are four dataclasses parsed together (`cpfcte_hf.cli.parse_args_with_presets`: YAML preset, then the
command line): `DeepLabDataArguments`, `DeepLabModelArguments`, `DeepLabTestArguments` (+ the CRF parameters as
`crf_<field>`) and `DeepLabV2TrainingArguments` (every `TrainingArguments` option plus the DeepLab recipe).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from transformers import default_data_collator, set_seed

from ..cli import check_model_option, describe, parse_args_with_presets, parse_key_values, print_error
from ..crf import DenseCRFConfig
from ..data import check_dataset
from ..prediction import distributed_state, finish_distributed
from ..pseudo_labeling import dataset_class_names, format_report, load_split
from ..trainer import resolve_resume_checkpoint
from ..visualization import atomic_write_text
from .configuration_deeplab import DeepLabV2Config, resnet101_config
from .fusion import check_test_fusion
from .modeling_deeplab import DeepLabV2ForSemanticSegmentation
from .processing import DEEPLAB_IMAGE_SIZE, deeplab_image_processor
from .training import (
    MULTI_SCALE,
    DeepLabV2Trainer,
    DeepLabV2TrainingArguments,
    MultiScaleEvalConfig,
    PseudoLabelDataset,
    predict_split,
    resolve_pseudo_label_dir,
    stage2_model_info,
)


logger = logging.getLogger(__name__)


@dataclass
class DeepLabDataArguments:
    """Where the images, the pseudo-labels and the ground truth come from."""

    dataset: str | None = field(
        default=None, metadata={"help": "Dataset kind for cpfcte_hf.data (voc, coco, shapes)."}
    )
    data_root: str | None = field(default=None, metadata={"help": "Dataset root directory (or Hub id)."})
    train_split: str = field(default="train_aug", metadata={"help": "Split whose images the pseudo-labels cover."})
    pseudo_labels: str | None = field(
        default=None,
        metadata={
            "help": "Output directory of scripts/pseudo_label.py (its crf/ masks are used), or a folder of <id>.png."
        },
    )
    pseudo_label_set: str = field(
        default="crf", metadata={"help": "Which masks of a pseudo_label.py output directory: 'crf' or 'bpm'."}
    )
    eval_split: str | None = field(
        default="val", metadata={"help": "Split with ground truth for the final evaluation (empty: none)."}
    )
    dataset_option: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra loader arguments KEY=VALUE (YAML values), e.g. num_train=512 image_size=64."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Arrow cache of the loaders."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N images only."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N images only (quick checks)."}
    )

    def loader_options(self) -> dict:
        """`dataset_option` (a list of KEY=VALUE, or a mapping from a YAML preset) and `cache_dir` as loader kwargs."""
        options = self.dataset_option
        options = parse_key_values(options)
        if self.cache_dir:
            options.setdefault("cache_dir", self.cache_dir)
        return options


@dataclass
class DeepLabModelArguments:
    """The network: ImageNet initialisation from a transformers ResNet checkpoint, or a DeepLab checkpoint."""

    backbone: str | None = field(
        default="microsoft/resnet-101",
        metadata={"help": "transformers ResNet checkpoint (Hub id or dir) for the backbone; 'none' = random init."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A DeepLab-v2 checkpoint to start from (fine-tuning, or evaluation only)."}
    )
    init_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A kazuto1011/deeplab-pytorch .pth to initialise from instead of --backbone, e.g. its converted "
            "COCO-pretrained deeplabv1_resnet101-coco.pth (the init of its VOC/COCO recipes; deeplab/convert.py)."
        },
    )
    output_stride: int = field(default=8, metadata={"help": "8 (dilation 2, 4 in the last stages), 16 or 32."})
    atrous_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24], metadata={"help": "ASPP rates."})
    freeze_batch_norm: bool = field(default=True, metadata={"help": "Keep the backbone's BatchNorm fixed."})
    resnet_depths: list[int] = field(
        default_factory=lambda: [3, 4, 23, 3], metadata={"help": "Blocks per stage when --backbone none."}
    )
    resnet_hidden_sizes: list[int] = field(
        default_factory=lambda: [256, 512, 1024, 2048], metadata={"help": "Stage widths when --backbone none."}
    )
    resnet_embedding_size: int = field(default=64, metadata={"help": "Stem width when --backbone none."})
    resnet_layer_type: str = field(
        default="bottleneck", metadata={"help": "'bottleneck' or 'basic' (--backbone none)."}
    )
    image_size: int = field(
        default=DEEPLAB_IMAGE_SIZE, metadata={"help": "Size the saved image processor (the pipeline) resizes to."}
    )


@dataclass
class DeepLabTestArguments:
    """Test-time inference of the final evaluation (docs/method.md section 4)."""

    test_scales: list[float] = field(
        default_factory=lambda: list(MULTI_SCALE), metadata={"help": "Scales fused by max (1.0 0.75 0.5)."}
    )
    test_flip: bool = field(default=False, metadata={"help": "Also run each scale flipped left-right."})
    test_fusion: str = field(
        default="image",
        metadata={
            "help": "Where the scales are fused by max: image (ours: every scale's logits upsampled to the image, "
            "align_corners=True) or logits (kazuto1011: at the 1.0 scale's logit size, align_corners=False)."
        },
    )
    test_crf: bool = field(default=True, metadata={"help": "Refine the fused probabilities with the dense CRF."})
    crf_workers: int | None = field(default=None, metadata={"help": "CRF processes per process (0 = serial)."})
    num_overlays: int = field(default=4, metadata={"help": "Overlay panels written with the report."})
    report_html: bool = field(
        default=True,
        metadata={
            "help": "Write report.html (every image and its masks) next to the predictions (--no_report_html: off)."
        },
    )

    def __post_init__(self):
        check_test_fusion(self.test_fusion)
        if self.test_fusion == "logits" and 1.0 not in [float(s) for s in self.test_scales]:
            raise ValueError("--test_fusion logits fuses at the 1.0 scale's logits: add 1.0 to --test_scales.")


_TYPES = {"int": int, "float": float, "bool": bool}
# The CRF parameters as `crf_<field>` options, generated from `DenseCRFConfig` so that the two never drift apart.
DenseCRFArguments = dataclasses.make_dataclass(
    "DenseCRFArguments",
    [
        (
            f"crf_{f.name}",
            _TYPES.get(f.type, f.type),
            field(default=f.default, metadata={"help": f"DenseCRFConfig.{f.name}"}),
        )
        for f in dataclasses.fields(DenseCRFConfig)
    ],
)


def crf_config_from(arguments) -> DenseCRFConfig:
    return DenseCRFConfig(**{f.name: getattr(arguments, f"crf_{f.name}") for f in dataclasses.fields(DenseCRFConfig)})


def build_model(model_args: DeepLabModelArguments, class_names: list[str]) -> DeepLabV2ForSemanticSegmentation:
    """The DeepLab-v2 to train: from `model_name_or_path`, else ImageNet `backbone` + a fresh ASPP, else random."""
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
        from .convert import load_kazuto_checkpoint

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


def _splits_to_load(data_args, model_args, training_args, train_dataset=None, eval_dataset=None) -> tuple[bool, bool]:
    """(load the training split, load the evaluation split): the training split gives the classes when there is
    no checkpoint to take them from."""
    need_train_split = training_args.do_train or not model_args.model_name_or_path
    return train_dataset is None and need_train_split, eval_dataset is None and bool(data_args.eval_split)


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
    reported, in one line naming the option or path: the data (`check_dataset` of the splits to load), the
    pseudo-labels, the model (`--model_name_or_path`, else `--init_checkpoint`, else `--backbone`), and bf16 on a
    machine without it (`turn_off_bf16`: how to turn it off, in the caller's words). Paths in `made_earlier` are
    made by an earlier step of a run (`cpfcte-hf run`) and not checked.
    """
    if load_train is None or load_eval is None:  # no datasets handed over: the splits are loaded
        load_train, load_eval = _splits_to_load(data_args, model_args, training_args)
    splits = [
        split for split, load in ((data_args.train_split, load_train), (data_args.eval_split, load_eval)) if load
    ]
    if splits and not data_args.dataset:
        raise ValueError("--dataset is required (voc, coco, shapes, ...).")
    for split in splits:
        check_dataset(data_args.dataset, data_args.data_root, split, **data_args.loader_options())
    if not training_args.do_train and not data_args.eval_split:
        raise ValueError("Nothing to do: no training (--do_train false) and no --eval_split.")
    if not training_args.do_train and not (model_args.model_name_or_path or model_args.init_checkpoint):
        raise ValueError(
            "--do_train false evaluates a trained model: give it with --model_name_or_path (or --init_checkpoint); "
            "without one the evaluation would score an untrained head."
        )
    if training_args.do_train and not data_args.pseudo_labels:
        raise ValueError("--pseudo_labels is required for training (the output directory of `cpfcte-hf label`).")
    if training_args.do_train and str(data_args.pseudo_labels) not in made_earlier:
        resolve_pseudo_label_dir(data_args.pseudo_labels, data_args.pseudo_label_set)
    _check_deeplab_model(model_args, made_earlier)
    if training_args.do_train:
        training_args.check_precision(turn_off_bf16)


def _check_deeplab_model(model_args: DeepLabModelArguments, made_earlier: Collection[str]) -> None:
    """The model source `build_model` will use exists: a checkpoint, else a converted .pth, else a backbone."""
    if model_args.model_name_or_path:
        if str(model_args.model_name_or_path) not in made_earlier:
            check_model_option("model_name_or_path", model_args.model_name_or_path)
    elif model_args.init_checkpoint:
        if not os.path.isfile(model_args.init_checkpoint):
            raise FileNotFoundError(f"--init_checkpoint {model_args.init_checkpoint}: no such file.")
    else:
        check_model_option("backbone", model_args.backbone)


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
    `predict_split` over the whole split | None, "model_dir": output_dir}`.
    """
    output_dir = Path(training_args.output_dir)
    resume = None
    if training_args.do_train:  # a bad --resume_from_checkpoint fails before the data is loaded
        resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    load_train, load_eval = _splits_to_load(data_args, model_args, training_args, train_dataset, eval_dataset)
    check_deeplab_inputs(data_args, model_args, training_args, load_train=load_train, load_eval=load_eval)
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

    reference = train_dataset if train_dataset is not None else eval_dataset
    class_names = dataset_class_names(reference)
    # The fresh ASPP (and a random backbone) start from --seed, as stage 1's model does: not from whatever state the
    # random generator was left in (in `cpfcte-hf run`, by the steps before; alone, torch's default seed).
    set_seed(training_args.seed)
    model = build_model(model_args, class_names)
    processor = deeplab_image_processor(model_args.image_size)

    result = {"train": None, "report": None, "prediction": None, "model_dir": str(output_dir)}
    if training_args.do_train:
        mask_dir = resolve_pseudo_label_dir(data_args.pseudo_labels, data_args.pseudo_label_set)
        train_set = PseudoLabelDataset(
            train_dataset,
            mask_dir,
            num_labels=model.config.num_labels,
            crop_size=training_args.crop_size,
            scale_range=(training_args.min_scale, training_args.max_scale),
            flip_prob=training_args.flip_prob,
            image_mean=processor.image_mean,
            image_std=processor.image_std,
            ignore_index=model.config.semantic_loss_ignore_index,
        )
        if training_args.should_log:
            print(training_args.train_batch_plan.line(), flush=True)
        if training_args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                output_dir / "run_args.json",
                describe(data_args, model_args, test_args, crf_args, training_args) + "\n",
            )
        trainer = DeepLabV2Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            eval_dataset=eval_dataset if training_args.eval_strategy != "no" else None,
            processing_class=processor,
            data_collator=default_data_collator,
        )
        train_output = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(output_dir))
        trainer.save_state()
        result["train"] = train_output.metrics
        # Predict with the weights as saved, on every process: under DDP each rank's BatchNorm running statistics
        # are its own after the last step, and only rank 0's were saved.
        trainer.accelerator.wait_for_everyone()
        model = DeepLabV2ForSemanticSegmentation.from_pretrained(str(output_dir))

    if eval_dataset is not None:
        model = model.to(training_args.device)
        config = MultiScaleEvalConfig(
            scales=tuple(test_args.test_scales),
            flip=test_args.test_flip,
            fusion=test_args.test_fusion,
            crf=test_args.test_crf,
            crf_config=crf_config_from(crf_args),
            crf_workers=test_args.crf_workers,
            num_overlays=test_args.num_overlays,
            report_html=test_args.report_html,
        )
        split = data_args.eval_split or "eval"
        # The folder of the weights scored, whose training files the report records: this run's, or the checkpoint's.
        model_dir = output_dir if training_args.do_train else model_args.model_name_or_path
        prediction = predict_split(
            model,
            eval_dataset,
            output_dir / "predictions" / split,
            config,
            image_processor=processor,
            dataset_name=data_args.dataset,
            split=split,
            model_info=stage2_model_info(model, model_dir),
        )
        result["report"] = prediction["report"]
        result["prediction"] = {key: value for key, value in prediction.items() if key != "report"}
        if training_args.process_index == 0:
            failed = prediction["failed"]
            print(
                f"{len(eval_dataset)} image(s) of {split}: {prediction['written']} written, "
                f"{prediction['already_done']} already done, {len(failed)} failed, {len(prediction['changed'])} "
                "changed since their masks were made (recomputed)"
                + (f" (e.g. {failed[0][0]}: {failed[0][1]})" if failed else "")
            )
        if training_args.process_index == 0 and prediction["report"] is not None:
            print(format_report(prediction["report"]))
            print(f"Report in {output_dir / 'predictions' / split / 'report'}")
        if training_args.process_index == 0 and prediction["report_html"]:
            print(f"Every image and its masks, to look at: {prediction['report_html']}")
    if training_args.process_index == 0 and result["train"] is not None:
        print(json.dumps(result["train"], indent=2))
    return result


def parse_arguments(argv=None):
    """(data, model, test, crf, training) arguments from `argv` and an optional `--config` YAML preset."""
    types = (
        DeepLabDataArguments,
        DeepLabModelArguments,
        DeepLabTestArguments,
        DenseCRFArguments,
        DeepLabV2TrainingArguments,
    )
    parsed = parse_args_with_presets(
        types,
        argv,
        description="Train DeepLab-v2 on CPF-CTE pseudo-labels and evaluate it (multi-scale + CRF).",
        command="train_deeplab",
        prog="cpfcte-hf train-deeplab",
    )
    # `parse_args_with_presets` may also return the argparse Namespace holding `--config`: keep the dataclasses.
    return tuple(value for value in parsed if isinstance(value, types))


def main(argv=None) -> int:
    data_args, model_args, test_args, crf_args, training_args = parse_arguments(argv)
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
    "run_deeplab",
]
