# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What a run recorded, in words: the rows of the model card's tables (`card.card_facts`).

Stage-1 training as run (`training_rows`, from `run_config.json` / `trainer_state.json`), each pseudo-labelling run
(`pseudo_label_rows`, from its results file's `settings`) and each stage-2 model (`stage2_models`, from its results
files' `model_info` and `settings`). Every value comes from those records; local paths are shortened (`public_value`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .measurements import Measurement, _number
from .public import public_value


def run_length(arguments: Mapping, state: Mapping | None) -> str:
    """How long a training ran: optimizer steps and epochs done (`trainer_state.json`) and the limit it had
    (`max_steps`, which overrides `num_train_epochs` when > 0, as in transformers' Trainer)."""
    max_steps, epochs = arguments.get("max_steps") or -1, arguments.get("num_train_epochs")
    limit = f"max_steps {max_steps}, which overrides num_train_epochs {_number(epochs)}" if max_steps > 0 else (
        f"num_train_epochs {_number(epochs)}"
    )  # fmt: skip
    if not state or state.get("global_step") is None:
        return f"not recorded (no trainer_state.json); limit: {limit}"
    done = f"{state['global_step']} optimizer steps = {state.get('epoch') or 0:.2f} epochs"
    short = state["global_step"] < max_steps if max_steps > 0 else (state.get("epoch") or 0) < (epochs or 0)
    return f"{done}{' (stopped before its limit)' if short else ''}; limit: {limit}"


def augmentation_text(data: Mapping) -> str:
    """The training augmentation a run recorded (`DataArguments`), only the steps that were on."""
    if not data.get("augment"):
        return "off"
    jitter = [
        f"brightness ±{_number(data.get('aug_brightness'))}" if data.get("aug_brightness") else None,
        f"contrast {_number(data['aug_contrast'][0])}–{_number(data['aug_contrast'][1])}"
        if list(data.get("aug_contrast") or [1, 1]) != [1, 1] else None,
        f"saturation {_number(data['aug_saturation'][0])}–{_number(data['aug_saturation'][1])}"
        if list(data.get("aug_saturation") or [1, 1]) != [1, 1] else None,
        f"hue ±{_number(data.get('aug_hue'))}" if data.get("aug_hue") else None,
    ]  # fmt: skip
    parts = [f"colour jitter ({', '.join(j for j in jitter if j)})"] if any(jitter) else []
    for key, name in (("aug_grayscale_p", "grayscale"), ("aug_hflip_p", "left-right flip"),
                      ("aug_vflip_p", "up-down flip"), ("aug_transpose_p", "transpose")):  # fmt: skip
        if data.get(key):
            parts.append(f"{name} p = {_number(data[key])}")
    return ", ".join(parts) or "on, with every step at probability 0 (no change)"


def _phases(train: Mapping) -> list[tuple[str, str]]:
    """The two phases of stage-1 training (`CPFCTETrainingArguments`) and its equivariance loss, as recorded."""
    first = None
    if train.get("stage1_steps"):
        first = f"{train['stage1_steps']} optimizer steps"
    elif (train.get("stage1_epochs") or 0) > 0:
        first = f"{_number(train['stage1_epochs'])} epochs"
    if first is not None:
        frozen = ", encoder frozen" if train.get("stage1_freeze_encoder") else ""
        first += f" at lr {_number(train.get('stage1_learning_rate'))}{frozen}"
    blocks = train.get("trainable_encoder_blocks")
    trainable = "whole encoder trainable" if blocks == -1 else f"last {blocks} encoder blocks + final norm trainable"
    rows = [("Phase 1", first or "none"), ("Phase 2", f"lr {_number(train.get('learning_rate'))}, {trainable}")]
    if (train.get("equivariance_loss_weight") or 0) > 0:
        rows.append(("Equivariance loss (ViT-PCM's L_ET)", f"weight {_number(train['equivariance_loss_weight'])}"))
    return rows


def training_rows(run_config: Mapping, trainer_state: Mapping | None) -> list[tuple[str, str]]:
    """The card's "this run" table of stage 1, every value from `run_config.json` / `trainer_state.json`."""
    model, data = run_config.get("ModelArguments") or {}, run_config.get("DataArguments") or {}
    train = next((v for k, v in run_config.items() if k.endswith("TrainingArguments")), None) or {}
    encoder = model.get("model_name_or_path") or model.get("backbone") or "from scratch (random ViT)"
    batch = f"{train.get('per_device_train_batch_size')} per device × {train.get('gradient_accumulation_steps') or 1}"
    return public_value([
        ("Dataset", data.get("dataset")),
        ("Data root", data.get("data_root")),
        ("Training split", data.get("train_split")),
        ("Evaluation split", data.get("eval_split") or "none"),
        ("Encoder initialisation", encoder),
        ("Training resolution", model.get("image_size")),
        ("Length", run_length(train, trainer_state)),
        ("Batch", batch + " accumulation"),
        *_phases(train),
        ("Optimizer", f"{train.get('optim')}, weight decay {_number(train.get('weight_decay'))}"),
        ("Augmentation", augmentation_text(data)),
        ("Pooling K", model.get("top_k")),
        ("Mixed precision", "bf16" if train.get("bf16") else "fp16" if train.get("fp16") else "off"),
        ("Seed", train.get("seed")),
    ])  # fmt: skip


def crf_text(settings: Mapping | None) -> str:
    """The dense CRF of recorded settings (`crf_config`, `crf_max_side`), or "none"."""
    if not settings:
        return "none"
    crf = settings.get("crf_config") or {}
    side = settings.get("crf_max_side")
    where = f", images above {side} px a side downscaled for it" if side else ""
    return (
        f"{crf.get('iterations')} iterations; Gaussian kernel sxy {_number(crf.get('gaussian_sxy'))}, compat "
        f"{_number(crf.get('gaussian_compat'))}; bilateral kernel sxy {_number(crf.get('bilateral_sxy'))}, srgb "
        f"{_number(crf.get('bilateral_srgb'))}, compat {_number(crf.get('bilateral_compat'))}{where}"
    )


def _size_text(size, patch: int) -> str:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return f"{height}×{width} ({height // patch}×{width // patch} patches)"


def pseudo_label_rows(measurements: Mapping[str, Measurement], patch: int) -> list[tuple]:
    """One row per pseudo-labelling run whose results file recorded its settings: (split, file, size, scales,
    flip, tags, CRF)."""
    rows = {}
    for m in measurements.values():
        settings = m.results.settings
        if m.results.stage != "pseudo_labels" or settings.get("size") is None:
            continue
        rows[m.source] = (
            m.split, m.repo_path or m.source.name, _size_text(settings["size"], patch),
            ", ".join(str(float(s)) for s in settings.get("scales") or [1.0]), "yes" if settings.get("flip") else "no",
            "yes" if settings.get("use_image_labels", True) else "no (every class competes)",
            crf_text(settings) if settings.get("crf", True) else "none",
        )  # fmt: skip
    return list(rows.values())


def stage2_name(architecture: Mapping) -> str:
    """The name of a stage-2 architecture a results file recorded: "DeepLab-v2", or transformers' `model_type`."""
    if "config" not in architecture:
        return "DeepLab-v2"
    return architecture.get("model_type") or "another architecture"


def _deeplab_initialisation(model: Mapping) -> str:
    if model.get("model_type") not in (None, "deeplab_v2"):  # another architecture: its checkpoint, or its config
        start = model.get("model_name_or_path")
        return f"the {model['model_type']} checkpoint {start}" if start else "random weights (built from its config)"
    if model.get("model_name_or_path"):
        return f"continued from the DeepLab-v2 checkpoint {model['model_name_or_path']}"
    if model.get("init_checkpoint"):
        return f"the deeplab-pytorch checkpoint {model['init_checkpoint']}"
    backbone = model.get("backbone")
    return f"ResNet weights of {backbone}, fresh ASPP" if backbone and backbone.lower() != "none" else "random weights"


def deeplab_training_rows(run_args: Mapping | None, state: Mapping | None) -> list[tuple[str, str]]:
    """The stage-2 training a results file recorded (`model_info`: `run_args.json`, `trainer_state.json`)."""
    if not run_args:
        return [("Training", "not recorded with the evaluated weights (no run_args.json next to them)")]
    model, data = run_args.get("DeepLabModelArguments") or {}, run_args.get("DeepLabDataArguments") or {}
    train = run_args.get("DeepLabV2TrainingArguments") or {}
    head = "ASPP" if model.get("model_type") in (None, "deeplab_v2") else "decode head"
    optimizer = (
        f"{train.get('optim')}, lr {_number(train.get('learning_rate'))} "
        f"({_number(train.get('classifier_lr_multiplier'))}× on the {head}), weight decay "
        f"{_number(train.get('weight_decay'))}"
        + (f", momentum {_number(train.get('momentum'))}" if train.get("optim") == "sgd" else "")
        + (f", poly decay (power {_number(train.get('poly_power'))})" if train.get("lr_scheduler_type") == "polynomial"
           else f", {train.get('lr_scheduler_type')} schedule")
    )  # fmt: skip
    rows = [
        ("Initialisation", _deeplab_initialisation(model)),
        ("Trained on", f"the `{data.get('pseudo_label_set')}` pseudo-labels of split {data.get('train_split')}"),
        ("Crops", f"{train.get('crop_size')} px, random scale {_number(train.get('min_scale'))}–"
                  f"{_number(train.get('max_scale'))}, left-right flip p = {_number(train.get('flip_prob'))}"),
        ("Optimizer", optimizer),
        ("Batch", f"{train.get('per_device_train_batch_size')} per device × "
                  f"{train.get('gradient_accumulation_steps') or 1} accumulation"),
        ("Length", run_length(train, state)),
        ("Mixed precision", "bf16" if train.get("bf16") else "fp16" if train.get("fp16") else "off"),
        ("Seed", train.get("seed")),
    ]  # fmt: skip
    if train.get("multi_scale_loss"):
        rows.insert(4, ("Loss", f"multi-scale, input scales {', '.join(map(_number, train.get('loss_scales')))}"))
    return public_value(rows)


def _architecture_text(architecture: Mapping) -> str:
    if "config" in architecture:  # another architecture than DeepLab-v2 (`segmenter.segmenter_architecture`)
        fields = ", ".join(f"{key} {value}" for key, value in sorted(architecture["config"].items()))
        return f"{architecture.get('model_type')} ({fields or 'the defaults of its config'})"
    depths = "/".join(str(d) for d in architecture.get("depths") or [])
    widths = "/".join(str(w) for w in architecture.get("hidden_sizes") or [])
    rates = "/".join(str(r) for r in architecture.get("atrous_rates") or [])
    frozen = ", BatchNorm frozen" if architecture.get("freeze_batch_norm") else ""
    return (
        f"ResNet with {architecture.get('layer_type')} blocks ({depths} per stage, widths {widths}, stem "
        f"{architecture.get('embedding_size')}{frozen}), output stride {architecture.get('output_stride')}, "
        f"ASPP rates {rates}"
    )


def stage2_models(measurements: Mapping[str, Measurement]) -> list[dict]:
    """The models of the stage-2 values, each `{"name": "DeepLab-v2" or its model_type, "rows": [(setting, value)],
    "tests": [(file, how)]}` from what its results files recorded (one entry per distinct model; `known` False and
    `name` None for files without `model_info`)."""
    models: dict[str, dict] = {}
    for m in measurements.values():
        if m.results.stage != "stage2":
            continue
        info = m.results.model_info
        entry = models.setdefault(
            json.dumps(info, sort_keys=True), {"known": bool(info), "name": None, "rows": [], "tests": {}}
        )
        if info and not entry["rows"]:
            entry["name"] = stage2_name(info.get("architecture") or {})
            entry["rows"] = [("Architecture", _architecture_text(info.get("architecture") or {}))]
            if info.get("num_parameters") is not None:
                entry["rows"].append(("Parameters", f"{info['num_parameters']:,}"))
            entry["rows"] += deeplab_training_rows(info.get("run_args"), info.get("trainer_state"))
        settings = m.results.settings
        scales = ", ".join(str(float(v)) for v in settings.get("scales") or [])
        how = f"scales {scales or 'not recorded'} fused by max" + (", with flip" if settings.get("flip") else "")
        how += ", then the dense CRF" if settings.get("crf") else ", no CRF"
        entry["tests"][m.repo_path or m.source.name] = (m.split, how)
    return [{**entry, "tests": [(file, *test) for file, test in entry["tests"].items()]} for entry in models.values()]


__all__ = [
    "augmentation_text",
    "crf_text",
    "deeplab_training_rows",
    "pseudo_label_rows",
    "run_length",
    "stage2_models",
    "training_rows",
]
