# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2's own options: data (`DeepLabDataArguments`), model (`DeepLabModelArguments`), test-time
(`DeepLabTestArguments`) and the CRF (`DenseCRFArguments`, generated from `DenseCRFConfig`).

Light on purpose (no torch, transformers or datasets), so that `cpfcte-hf train-deeplab --help` and the input
checks answer at once; `train.py` builds the run from them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..data.arguments import DataSourceArguments
from ..models.cpfcte.crf import DenseCRFConfig
from ..prediction.config import MULTI_SCALE, check_test_fusion
from ..utils.arguments import parse_args_with_presets
from ..utils.help import LazyArguments


# DeepLab's evaluation size on VOC (8k + 1, larger than any VOC image side): the saved image processor's default.
# The same value as `models.deeplab_v2.processing.DEEPLAB_IMAGE_SIZE` (a test checks), kept here so that the options
# do not import transformers.
DEEPLAB_IMAGE_SIZE = 513


@dataclass
class DeepLabDataArguments(DataSourceArguments):
    """Where the images, the pseudo-labels and the ground truth come from."""

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
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N images only."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N images only (quick checks)."}
    )


@dataclass
class DeepLabModelArguments:
    """The network: DeepLab-v2 (ImageNet initialisation from a transformers ResNet checkpoint, or a DeepLab
    checkpoint), or any transformers semantic-segmentation architecture (`model_type`, `cpfcte_hf.models.segmenters`)."""

    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Architecture: deeplab_v2 (the default, the paper's) or any AutoModelForSemanticSegmentation type "
            "(segformer, upernet, dpt, ...), built from its config with random weights unless --model_name_or_path "
            "(whose own type it must match). The other options of this group are DeepLab-v2's."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "With --model_type other than deeplab_v2: config fields over its defaults, KEY=VALUE pairs "
            "separated by commas, values YAML, e.g. 'depths=[1,1,1,1],hidden_sizes=[16,32,64,128]'; a dotted key "
            "sets a nested config's field (backbone_config.depths=[1,1,1,1])."
        },
    )
    backbone: str | None = field(
        default="microsoft/resnet-101",
        metadata={"help": "transformers ResNet checkpoint (Hub id or dir) for the backbone; 'none' = random init."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint to start from (fine-tuning, or evaluation only): DeepLab-v2, or any transformers "
            "semantic-segmentation model or encoder (e.g. nvidia/mit-b1: a new decode head for the dataset's classes).",
            "aliases": ["--model"],
        },
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


ARGUMENT_TYPES = (
    DeepLabDataArguments,
    DeepLabModelArguments,
    DeepLabTestArguments,
    DenseCRFArguments,
    LazyArguments(
        "cpfcte_hf.stage2.trainer:DeepLabV2TrainingArguments",
        "Trainer options (transformers' TrainingArguments and the DeepLab-v2 recipe)",
    ),
)


def parse_arguments(argv=None, prog: str = "cpfcte-hf train-deeplab", early_check=None, light: bool = False):
    """(data, model, test, crf, training) arguments from `argv` and an optional `--config` YAML preset; `prog` is
    the command's name in messages (`train-deeplab` and `train-segmenter` are the same command). `early_check` (the
    command's own start: `stage2.checks.early_check`) runs before transformers is imported; `run` and `reproduce`
    parse their steps without it and check them themselves (`light`: the options built without transformers, or
    None; see `parse_args_with_presets`)."""
    return parse_args_with_presets(
        ARGUMENT_TYPES,
        argv,
        description="Train DeepLab-v2 (or any transformers semantic-segmentation model, --model_type) on CPF-CTE "
        "pseudo-labels and evaluate it (multi-scale + CRF).",
        command="train_deeplab",
        prog=prog,
        early_check=early_check,
        light=light,
    )
