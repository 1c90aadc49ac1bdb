# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2 with any transformers semantic-segmentation model (`AutoModelForSemanticSegmentation`).

`cpfcte-hf train-segmenter` trains DeepLab-v2 (the paper's stage 2 and the default) or any architecture transformers
maps in `AutoModelForSemanticSegmentation` (SegFormer, UperNet, DPT, BEiT, MobileViT, ...) on the pseudo-labels,
through the same data, trainer, prediction job and multi-scale + CRF evaluation (`cpfcte_hf.stage2.train`). This module
holds what differs between architectures, in one place:

- `build_segmenter`: the model from a config (`model_type` plus `config_overrides`, random weights) or from a
  checkpoint (a Hub id or a folder; a new decode head when the checkpoint's classes are not the dataset's, e.g. an
  encoder-only `nvidia/mit-b1`), with the dataset's `id2label` / `label2id`;
- `segmenter_image_processor`: the image processor saved with it (transformers' own class for the architecture, with
  the statistics and size training used), so that `pipeline("image-segmentation", model=DIR)` loads the checkpoint
  with plain transformers classes;
- `segmentation_loss`: the one training loss of every architecture: the logits, at whatever resolution the model
  gives them (DeepLab-v2 1/8, SegFormer 1/4, UperNet 1/1), bilinearly upsampled to the labels and scored by
  cross-entropy ignoring 255;
- `body_and_head_parameters`: the pretrained body (`base_model`, or `backbone`) and the freshly initialised head, for
  the learning-rate groups;
- `segmenter_architecture`: what a results file records about a model that is not DeepLab-v2.

Auxiliary heads (UperNet's FCN head, DPT's and BEiT's) are switched off (`use_auxiliary_head=False`): the loss trains
the main head only, and a head without a loss would only cost time and leave parameters without gradients.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as F
import yaml
from transformers import AutoConfig, AutoModelForSemanticSegmentation, PretrainedConfig
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from . import DEEPLAB_MODEL_TYPE, check_model_type
from .cpfcte.metrics import IGNORE_INDEX


logger = logging.getLogger(__name__)

# Config keys that are not architecture: left out of `segmenter_architecture`.
_NOT_ARCHITECTURE = {
    "id2label", "label2id", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
    "semantic_loss_ignore_index", "num_labels", "problem_type", "return_dict", "output_hidden_states", "model_type",
}  # fmt: skip


def segmenter_model_types() -> list[str]:
    """The architectures `--model_type` takes: DeepLab-v2 and every model type of `AutoModelForSemanticSegmentation`."""
    return [DEEPLAB_MODEL_TYPE] + sorted(t for t in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES if t != "deeplab_v2")


def parse_config_overrides(overrides) -> dict:
    """
    `--config_overrides` as a dict. A string `"k=v,k=v"` (as transformers' example scripts take it) whose values are
    YAML, so lists and mappings work: `"depths=[1,1,1,1],hidden_sizes=[16,32,64,128],decoder_hidden_size=64"`;
    commas inside brackets or braces do not split. A mapping (from a YAML preset) passes through. A dotted key
    (`backbone_config.depths=[1,1]`) sets a field of a nested config.
    """
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parts, depth, current = [], 0, ""
    for char in str(overrides):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    parsed = {}
    for part in parts:
        key, separator, value = part.partition("=")
        if not separator or not re.fullmatch(r"[A-Za-z_][\w.]*", key.strip()):
            raise ValueError(f"--config_overrides: expected KEY=VALUE pairs separated by commas, got {part!r}.")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--config_overrides: {key.strip()}={value!r} is not a YAML value ({error}).") from None
    return parsed


def _check_model_type(model_type: str) -> None:
    check_model_type(model_type, segmenter_model_types())


def resolve_model_type(model_type: str | None, model_name_or_path: str | None = None) -> str:
    """
    The architecture a stage-2 run trains: `model_type` when given (checked against the checkpoint's, if any), else
    the type of `model_name_or_path`'s config, else DeepLab-v2 (the paper's stage 2).
    """
    if model_type:
        _check_model_type(model_type)
    if model_name_or_path:
        checkpoint_type = AutoConfig.from_pretrained(model_name_or_path).model_type
        if model_type and checkpoint_type != model_type:
            raise ValueError(
                f"--model_type {model_type} disagrees with --model_name_or_path {model_name_or_path} "
                f"(a {checkpoint_type} checkpoint): leave --model_type out."
            )
        _check_model_type(checkpoint_type)
        return checkpoint_type
    return model_type or DEEPLAB_MODEL_TYPE


def label_kwargs(class_names) -> dict:
    """The config fields that name the classes: `id2label`, `label2id`, `num_labels`."""
    names = [str(name) for name in class_names]
    return {
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
        "num_labels": len(names),
    }


def _no_auxiliary_head(config: PretrainedConfig, requested: dict) -> None:
    if getattr(config, "use_auxiliary_head", False):
        if requested.get("use_auxiliary_head"):
            raise ValueError(
                "--config_overrides use_auxiliary_head=true: stage 2's loss (`segmentation_loss`) trains the main "
                "head only; an auxiliary head would get no gradient."
            )
        config.use_auxiliary_head = False


def segmenter_config(model_type: str, class_names, config_overrides=None) -> PretrainedConfig:
    """
    A transformers config of `model_type` with its defaults, `config_overrides` on top (each key must be a field of
    that config; a dotted key sets a nested config's field) and the dataset's classes; 255 is ignored by the loss.

    ```python
    >>> config = segmenter_config("segformer", ["background", "cat"], "depths=[1,1,1,1],decoder_hidden_size=64")
    ```
    """
    _check_model_type(model_type)
    if model_type == DEEPLAB_MODEL_TYPE:
        raise ValueError("DeepLab-v2 is built from its own options (cpfcte_hf.stage2.train.build_model).")
    overrides = parse_config_overrides(config_overrides)
    defaults = AutoConfig.for_model(model_type)
    flat, nested = {}, {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not hasattr(defaults, head):
            raise ValueError(f"--config_overrides: {head!r} is not a field of the {model_type} config.")
        if rest:
            if not isinstance(getattr(defaults, head), PretrainedConfig):
                raise ValueError(f"--config_overrides: {head!r} of the {model_type} config is not a nested config.")
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, fields in nested.items():
        base = flat.get(head)
        base = dict(base) if isinstance(base, dict) else getattr(defaults, head).to_dict()
        flat[head] = {**base, **fields}
    config = AutoConfig.for_model(model_type, **flat, **label_kwargs(class_names))
    for head, value in flat.items():
        _keep_every_stage(getattr(defaults, head), getattr(config, head), value)
    config.semantic_loss_ignore_index = IGNORE_INDEX
    _no_auxiliary_head(config, overrides)
    return config


def _keep_every_stage(default, built, given) -> None:
    """A backbone config given as a mapping without `out_features` / `out_indices` feeds the decoder every stage when
    the architecture's default backbone does (UperNet's FPN), not only its last stage (a backbone's own default)."""
    if not isinstance(given, dict) or "out_features" in given or "out_indices" in given:
        return
    stages = getattr(default, "out_features", None)
    if isinstance(built, PretrainedConfig) and stages and len(stages) > 1 and getattr(built, "stage_names", None):
        built.out_features = list(built.stage_names[1:])


def build_segmenter(
    class_names,
    model_type: str | None = None,
    model_name_or_path: str | None = None,
    config_overrides=None,
    new_head_allowed: bool = True,
):
    """
    A transformers semantic-segmentation model for `class_names` (not DeepLab-v2, which `stage2.train.build_model`
    builds): from `model_name_or_path` (a Hub id or a folder; `model_type`, when given, must agree with it) or,
    without one, from `segmenter_config(model_type, class_names, config_overrides)` with random weights.

    A checkpoint whose classes are not `class_names` (an encoder-only checkpoint such as `nvidia/mit-b1`, or a
    segmenter of other classes) gets a new decode head for them (`new_head_allowed`, i.e. when training); otherwise
    that is a ValueError (scoring a head trained for other classes would be meaningless).
    """
    names = [str(name) for name in class_names]
    if not model_name_or_path:
        _check_model_type(model_type)
        config = segmenter_config(model_type, names, config_overrides)
        logger.warning(f"--model_type {model_type}: random initialisation (no --model_name_or_path).")
        return AutoModelForSemanticSegmentation.from_config(config)
    resolve_model_type(model_type, model_name_or_path)
    config = AutoConfig.from_pretrained(model_name_or_path)
    _check_overrides_match(config, config_overrides, model_name_or_path)
    trained = [str(config.id2label[i]) for i in range(config.num_labels)] if config.id2label else []
    kwargs = {}
    if trained != names:
        if not new_head_allowed:
            raise ValueError(
                f"--model_name_or_path {model_name_or_path} predicts classes {trained[:6]}... ({len(trained)}), the "
                f"dataset has {names[:6]}... ({len(names)})."
            )
        logger.warning(
            f"{model_name_or_path} was not trained for the dataset's {len(names)} classes: its decode head is "
            "initialised afresh."
        )
        labels = label_kwargs(names)
        kwargs = {"id2label": labels["id2label"], "label2id": labels["label2id"], "ignore_mismatched_sizes": True}
    if getattr(config, "use_auxiliary_head", False):
        kwargs["use_auxiliary_head"] = False  # see the module docstring
    model = AutoModelForSemanticSegmentation.from_pretrained(model_name_or_path, **kwargs)
    model.config.semantic_loss_ignore_index = IGNORE_INDEX
    return model


def _check_overrides_match(config: PretrainedConfig, config_overrides, model_name_or_path: str) -> None:
    """`--config_overrides` with a checkpoint: the preset that trained it may be given again (evaluation only,
    `cpfcte-hf run`), but an override cannot change the checkpoint's architecture (a ValueError naming the key)."""
    overrides = parse_config_overrides(config_overrides)
    if not overrides:
        return
    wanted = segmenter_config(config.model_type, ["_"], overrides)
    for key in overrides:
        head = key.partition(".")[0]
        have, want = getattr(config, head, None), getattr(wanted, head, None)
        if isinstance(have, PretrainedConfig) and isinstance(want, PretrainedConfig):
            have, want = have.to_diff_dict(), want.to_diff_dict()
            have, want = ({k: v for k, v in d.items() if k != "transformers_version"} for d in (have, want))
        if _plain(have) != _plain(want):
            raise ValueError(
                f"--config_overrides {head}={_plain(want)} disagrees with --model_name_or_path {model_name_or_path} "
                f"({head}={_plain(have)}): overrides build a model from a config, they cannot change a checkpoint."
            )


def _plain(value):
    """Tuples as lists (configs keep some lists as tuples), recursively, for comparing config values."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def segmenter_image_processor(model, image_size: int, image_mean, image_std):
    """
    The image processor saved with a model that is not DeepLab-v2: transformers' own (PIL) class for its
    architecture (`SegformerImageProcessorPil` for SegFormer and UperNet, `DPTImageProcessorPil`, ...), resizing to
    `image_size` x `image_size` and normalising with `image_mean` / `image_std` (those of training), labels not
    reduced. `pipeline("image-segmentation", model=DIR)` reads it and post-processes to each image's own size.
    """
    import transformers

    model_type = model.config.model_type
    classes = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    name = classes.get("pil") if isinstance(classes, dict) else None
    if name is None:
        raise ValueError(f"transformers has no image processor for {model_type!r} models.")
    processor_class = getattr(transformers, name)
    kwargs = {
        "size": {"height": int(image_size), "width": int(image_size)},
        "image_mean": [float(v) for v in image_mean],
        "image_std": [float(v) for v in image_std],
    }
    processor = processor_class(**kwargs)
    for flag in ("do_reduce_labels", "do_center_crop", "keep_aspect_ratio", "do_pad"):
        if getattr(processor, flag, False):  # e.g. BEiT's crop, DPT's aspect ratio: a plain resize, as training saw
            setattr(processor, flag, False)
    return processor


def segmentation_loss(
    model,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    align_corners: bool = False,
):
    """
    The stage-2 training loss of every architecture, and its outputs: the model's `logits` `(B, C, h, w)` (any
    resolution) bilinearly upsampled to the labels `(B, H, W)` (`align_corners`: the config's when it has one,
    DeepLab-v2's True; False as transformers' own heads upsample), cross-entropy over the pixels that are not
    `ignore_index`. A batch without a labelled pixel gives a zero that keeps the graph (distributed processes then
    step in lockstep instead of one stopping on a NaN).
    """
    outputs = model(pixel_values=pixel_values)
    logits = outputs.logits
    num_labels = logits.shape[1]
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`labels` must be class ids of shape (batch_size, height, width) with batch_size {logits.shape[0]}; "
            f"got shape {tuple(labels.shape)}."
        )
    labels = labels.long()
    valid = labels[labels != ignore_index]
    if valid.numel() == 0:
        return logits.float().sum() * 0.0, outputs
    if int(valid.min()) < 0 or int(valid.max()) >= num_labels:
        raise ValueError(
            f"`labels` holds class ids {int(valid.min())}..{int(valid.max())}; expected 0..{num_labels - 1} or "
            f"{ignore_index} (ignored)."
        )
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index), outputs


def body_and_head_parameters(model) -> tuple[list, list]:
    """
    The trainable parameters of the body (`model.base_model`: DeepLab-v2's ResNet, SegFormer's encoder, DPT's ViT;
    else `model.backbone`: UperNet's) and of everything else (the decode head, initialised for the task).
    """
    body = model.base_model if model.base_model is not model else getattr(model, "backbone", None)
    body_ids = {id(p) for p in body.parameters()} if body is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [p for p in trainable if id(p) in body_ids], [p for p in trainable if id(p) not in body_ids]


def segmenter_architecture(model) -> dict:
    """What a results file records about a model's architecture: its `model_type` and the config fields that differ
    from the defaults of that type (nested configs, e.g. UperNet's backbone, included)."""
    config = model.config
    fields = {key: value for key, value in config.to_diff_dict().items() if key not in _NOT_ARCHITECTURE}
    for key, value in list(fields.items()):
        if isinstance(value, dict):
            fields[key] = {k: v for k, v in value.items() if k not in _NOT_ARCHITECTURE}
    return {"model_type": config.model_type, "config": fields}


__all__ = [
    "DEEPLAB_MODEL_TYPE",
    "body_and_head_parameters",
    "build_segmenter",
    "label_kwargs",
    "parse_config_overrides",
    "resolve_model_type",
    "segmentation_loss",
    "segmenter_architecture",
    "segmenter_config",
    "segmenter_image_processor",
    "segmenter_model_types",
]
