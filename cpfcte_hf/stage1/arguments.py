# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 1's own options: the model (`ModelArguments`) and the data (`DataArguments`).

Light on purpose (no torch, transformers or datasets), so that `cpfcte-hf train --help` and the input checks
answer at once; `train.py` builds the run from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..data.arguments import DataSourceArguments
from ..utils.help import LazyArguments
from ..utils.options import build_from_options


if TYPE_CHECKING:
    from ..data.transforms import AugmentationConfig


@dataclass
class ModelArguments:
    """Which model to train: from a ViT checkpoint (the paper), from scratch, or from a CPF-CTE checkpoint."""

    backbone: str | None = field(
        default=None,
        metadata={"help": "ViT checkpoint for the encoder (Hub id or dir), e.g. google/vit-base-patch16-384."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A CPF-CTE checkpoint to continue from (instead of --backbone).", "aliases": ["--model"]},
    )
    image_size: int = field(default=384, metadata={"help": "Training resolution (square), a multiple of the patch."})
    patch_size: int = field(default=16, metadata={"help": "From scratch only: ViT patch size."})
    hidden_size: int = field(default=768, metadata={"help": "From scratch only: ViT width D."})
    num_hidden_layers: int = field(default=12, metadata={"help": "From scratch only: ViT depth."})
    num_attention_heads: int = field(default=12, metadata={"help": "From scratch only: attention heads."})
    intermediate_size: int = field(default=3072, metadata={"help": "From scratch only: MLP width."})
    use_class_tokens: bool = field(default=True, metadata={"help": "Class-token fusion (paper Table 4)."})
    use_context_fusion: bool = field(default=True, metadata={"help": "CF-BiLSTM (paper Table 4)."})
    pooling: str = field(default="topk", metadata={"help": "topk, max or avg (paper Table 5)."})
    top_k: float = field(
        default=16,
        metadata={
            "help": "K of Top-K pooling: a number of patches (16) or a fraction of them in (0, 1) (0.03), which "
            "transfers between grid sizes (README: the K sweep)."
        },
    )
    lstm_hidden_size: int | None = field(
        default=None, metadata={"help": "Hidden size per LSTM direction; default D/4 (192 for ViT-B)."}
    )
    context_fusion_residual: bool = field(
        default=False, metadata={"help": "x + CF-BiLSTM(x) instead of CF-BiLSTM(x) (not in the paper)."}
    )
    context_fusion_projection: bool = field(
        default=True,
        metadata={"help": "Project [h; v] back to D (paper eq. 6); False feeds 4*lstm_hidden_size on (ViT-PCM)."},
    )
    context_fusion_dropout: float = 0.2
    context_fusion_projection_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout on [h; v] before the projection (eq. 6); default: --context_fusion_dropout. 0 is the "
            "reference's (ViT-PCM has no projection: only the classifier's dropout reads [h; v])."
        },
    )
    context_fusion_lstm_dropout_mode: str = field(
        default="none",
        metadata={"help": "Dropout inside the LSTMs: none, or per_sequence (ViT-PCM's Keras LSTM dropout)."},
    )
    classifier_dropout: float = 0.2
    classifier_l2_weight: float = 0.01
    hidden_dropout_prob: float | None = field(
        default=None,
        metadata={
            "help": "ViT dropout after attention and in the MLP of every block (vit-keras, ViT-PCM: 0.1); "
            "default: the backbone config's (0.0 in google/vit-base-patch16-384)."
        },
    )
    attention_probs_dropout_prob: float | None = field(
        default=None,
        metadata={"help": "ViT dropout on the attention weights (vit-keras: none); default: the backbone config's."},
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager or flash_attention_2."})
    inference_size: int | None = field(
        default=None,
        metadata={
            "help": "Pseudo-label resolution stored in the checkpoint (config.inference_size), the default of "
            "pseudo_label.py --size. Default: kept from --model_name_or_path, else 960 (ViT-PCM's, for 384-px)."
        },
    )


@dataclass
class DataArguments(DataSourceArguments):
    """Which data: a source name, its root, the splits, and extra loader options."""

    dataset: str = field(default="shapes", metadata={"help": "voc, coco, shapes, tagged or hub."})
    train_split: str = field(default="train", metadata={"help": "e.g. train_aug for VOC, train for COCO."})
    eval_split: str | None = field(default="val", metadata={"help": "Split with masks for mIoU; empty: none."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    augment: bool = field(default=True, metadata={"help": "ViT-PCM augmentation (colour jitter, flips, ...)."})
    aug_brightness: float = field(default=0.2, metadata={"help": "Brightness delta range (images in [0, 1])."})
    aug_contrast: list[float] = field(default_factory=lambda: [0.5, 2.0], metadata={"help": "Contrast factors."})
    aug_saturation: list[float] = field(default_factory=lambda: [0.5, 1.5], metadata={"help": "Saturation factors."})
    aug_hue: float = field(default=0.1, metadata={"help": "Hue shift range, in turns."})
    aug_grayscale_p: float = 0.1
    aug_hflip_p: float = 0.5
    aug_vflip_p: float = 0.5
    aug_transpose_p: float = 0.5
    aug_clip: bool = field(
        default=True,
        metadata={
            "help": "Clamp to [0, 1] after every colour step and round to 8-bit levels (ours); false: unclipped "
            "floats, as ViT-PCM's colour jitter on 0..255 floats."
        },
    )
    et_crop_p: float = field(
        default=0.3, metadata={"help": "L_ET second view: probability of a crop (ViT-PCM PROB_CROP 0.3)."}
    )
    et_crop_size: int | None = field(
        default=None,
        metadata={"help": "L_ET second view: crop side in pixels (ViT-PCM: 128 of 384); default a third of the size."},
    )
    et_scale_size: int | None = field(
        default=None, metadata={"help": "L_ET second view: side it is resized to; default half the training size."}
    )

    def augmentation_config(self) -> AugmentationConfig:
        from ..data.transforms import AugmentationConfig

        return build_from_options(AugmentationConfig, self, ("aug_",))  # aug_brightness -> brightness, ...


def check_one_model_source(model_args: ModelArguments) -> None:
    if model_args.model_name_or_path and model_args.backbone:
        raise ValueError("Pass either --model_name_or_path (a CPF-CTE checkpoint) or --backbone, not both.")


def check_data_and_model(model_args: ModelArguments, data_args: DataArguments, *_: object) -> None:
    """
    The inputs of a training start that need no library to check, in the order they are reported: the data (loader
    options, root, split files: `check_dataset`) and the model (`--model_name_or_path` or `--backbone`, a folder that
    exists and is a checkpoint, or a Hub id). `cpfcte-hf train` runs it before transformers is imported.
    """
    from ..data import check_dataset
    from ..utils.arguments import check_model_option

    options = data_args.loader_options()
    for split in (data_args.train_split, data_args.eval_split):
        if split:
            check_dataset(data_args.dataset, data_args.data_root, split, **options)
    check_one_model_source(model_args)
    check_model_option("model_name_or_path", model_args.model_name_or_path)
    check_model_option("backbone", model_args.backbone)


# Trainer's options (`CPFCTETrainingArguments` = transformers' `TrainingArguments` + the CPF-CTE schedule): imported
# for the parse only, listed by `--help_all`.
TRAINER_OPTIONS = LazyArguments(
    "cpfcte_hf.stage1.trainer:CPFCTETrainingArguments",
    "Trainer options (transformers' TrainingArguments and the CPF-CTE schedule)",
)
