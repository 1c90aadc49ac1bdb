# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Sharing a trained CPF-CTE checkpoint on the Hugging Face Hub: the Hub folder, its model card, the push.

`scripts/push_to_hub.py` is a thin wrapper around `build_hub_folder` (`--dry-run OUT`) and `push_to_hub`.

The Hub folder holds everything a user needs, with or without this package:

```
config.json                  CPFCTEConfig, with `auto_map` (model, AutoModel and image processor: remote code)
model.safetensors            the weights (sharded `model-*.safetensors` + index for large models)
preprocessor_config.json     CPFCTEImageProcessor (resize, [-1, 1] scaling)
configuration_cpfcte.py      \
modeling_cpfcte.py            > the model's source files, for `trust_remote_code=True`
image_processing_cpfcte.py   /
README.md                    the model card: a template of `model_cards/` filled with this checkpoint's results
results.json                 every measurement on the card: value, dataset, split, images, the file it was read from
results/<group>/...          copies of those results files (and the per-class plots), e.g. results/pseudo_labels/
```

Model-card rule: a number on the card comes from a results file that the project's scripts wrote, never from the
template. Template metrics are `${<measurement>}` placeholders (see `MEASUREMENTS`); one without a results file
renders as "not measured" and its `model-index` entry is left out. A literal number in a template's `model-index`
is refused.

Results sources (`results=`), a file or a directory:

* a training output directory of `scripts/train.py` (`eval_results.json` with `eval_mean_iou`, plus `run_config.json`):
  the validation pseudo-label mIoU computed by the trainer (no CRF, training resolution). The model directory itself
  is always read for it when it has one;
* a pseudo-label output directory of `scripts/pseudo_label.py` (`report/metrics.json`, sets `BPM` and `CRF`), a
  report directory of `scripts/evaluate.py` (`metrics.json`, sets named after the folders `bpm`, `crf`, ...);
* a DeepLab-v2 output directory of `scripts/train_deeplab.py` (`predictions/<split>/report/metrics.json`, sets `MS`
  and `MS+CRF`), or that report directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .configuration_cpfcte import VOC_CLASSES, CPFCTEConfig


CARD_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "model_cards"
CARD_DIR_PREFIX = "cpf-cte-"
# Class counts of the datasets a named card describes (background included): a card never describes a model
# trained on other classes.
CARD_NUM_LABELS = {"voc": 21, "coco": 81}
SOURCE_FILES = ("configuration_cpfcte.py", "modeling_cpfcte.py", "image_processing_cpfcte.py")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
NOT_MEASURED = "not measured"
RESULTS_FILE = "results.json"

# Measurement key -> what it is. A key is the placeholder of its mIoU; `<key without _miou>_split`,
# `_dataset` and `_num_images` are placeholders too.
MEASUREMENTS = {
    "pseudo_label_crf_miou": "Pseudo-labels after the dense CRF (SPEC §3, the labels stage 2 trains on)",
    "pseudo_label_bpm_miou": "Pseudo-labels before the CRF (baseline pseudo masks, BPM)",
    "training_eval_miou": "Validation pseudo-label mIoU computed by the trainer (no CRF, training resolution)",
    "deeplab_ms_crf_miou": "DeepLab-v2 trained on the pseudo-labels: multi-scale + CRF (stage 2)",
    "deeplab_ms_miou": "DeepLab-v2 trained on the pseudo-labels: multi-scale, no CRF (stage 2)",
}
# Prediction-set names of a `metrics.json` report (pseudo_labeling.evaluate_predictions) -> measurement key.
REPORT_SETS = {
    "crf": "pseudo_label_crf_miou",
    "bpm": "pseudo_label_bpm_miou",
    "ms+crf": "deeplab_ms_crf_miou",
    "ms_crf": "deeplab_ms_crf_miou",
    "ms": "deeplab_ms_miou",
}
RESULT_GROUPS = {
    "training_eval_miou": "training",
    "pseudo_label_crf_miou": "pseudo_labels",
    "pseudo_label_bpm_miou": "pseudo_labels",
    "deeplab_ms_crf_miou": "deeplab",
    "deeplab_ms_miou": "deeplab",
}


class HubSharingError(ValueError):
    """A bad input to the sharing step: model directory, card template, results file, repo id, output folder."""


class HubPushError(RuntimeError):
    """The push itself could not happen: offline mode, no token, the Hub unreachable or refusing."""


# ----------------------------------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One mIoU read from a results file.

    Attributes:
        key: a key of `MEASUREMENTS`.
        mean_iou: in [0, 1], as the file holds it.
        dataset, split, num_images: what it was measured on, when the file (or the run's config) says.
        source: the file it was read from.
        per_class: `{class name: IoU in [0, 1] or None}` when the file has it.
        companions: other files of the same producer worth keeping next to it (per-class CSV/plot, run config).
    """

    key: str
    mean_iou: float
    source: Path
    dataset: str | None = None
    split: str | None = None
    num_images: int | None = None
    per_class: dict[str, float | None] | None = None
    companions: list[Path] = field(default_factory=list)
    repo_path: str | None = None  # where the source file lies in the Hub folder, once copied

    @property
    def percent(self) -> float:
        """The mIoU in %, rounded to 2 decimals: the value on the card and in its `model-index`."""
        return round(100.0 * self.mean_iou, 2)


def _read_json(path: Path) -> dict:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise HubSharingError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise HubSharingError(f"{path} does not hold a JSON object.")
    return data


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def find_results_files(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """
    The results files of one `--results` argument, as `[(kind, path)]` with kind `"training"` (an
    `eval_results.json` / `all_results.json` of `Trainer`) or `"report"` (a `metrics.json` of `evaluate_predictions`).

    Raises:
        HubSharingError: the path does not exist, is a file of another kind, or a directory holding none of them.
    """
    path = Path(source)
    if path.is_file():
        if path.name in ("eval_results.json", "all_results.json"):
            return [("training", path)]
        if path.name == "metrics.json":
            return [("report", path)]
        if path.name == "summary.json" and (path.parent / "report" / "metrics.json").is_file():
            return [("report", path.parent / "report" / "metrics.json")]
        raise HubSharingError(
            f"--results {path}: unknown results file. Expected eval_results.json or all_results.json "
            "(scripts/train.py), or a report's metrics.json (scripts/pseudo_label.py, evaluate.py, train_deeplab.py)."
        )
    if not path.is_dir():
        raise HubSharingError(f"--results {path}: no such file or directory.")
    found = []
    if (path / "eval_results.json").is_file():
        found.append(("training", path / "eval_results.json"))
    if (path / "metrics.json").is_file():
        found.append(("report", path / "metrics.json"))
    elif (path / "report" / "metrics.json").is_file():
        found.append(("report", path / "report" / "metrics.json"))
    else:
        deeplab = sorted(path.glob("predictions/*/report/metrics.json"))
        if len(deeplab) > 1:
            raise HubSharingError(
                f"--results {path}: several DeepLab evaluation reports ({', '.join(str(p) for p in deeplab)}); "
                "pass the report directory of the split the card should show."
            )
        found += [("report", p) for p in deeplab]
    if not found:
        raise HubSharingError(
            f"--results {path}: no results in this directory. Expected eval_results.json (a scripts/train.py "
            "output directory), report/metrics.json (scripts/pseudo_label.py output), metrics.json (a report "
            "directory) or predictions/<split>/report/metrics.json (scripts/train_deeplab.py output)."
        )
    return found


def _check_class_names(path: Path, names: Sequence[str], class_names: Sequence[str] | None) -> None:
    if class_names is not None and list(names) != list(class_names):
        raise HubSharingError(
            f"Results file {path} was measured on {len(names)} classes {list(names)[:6]}..., but the model has "
            f"{len(class_names)} classes {list(class_names)[:6]}...: these results are not this model's."
        )


def read_training_results(path: Path, class_names: Sequence[str] | None = None) -> list[Measurement]:
    """The trainer's final evaluation (`eval_mean_iou`) of `run_training`, with split and dataset from its
    `run_config.json` when that lies next to it."""
    data = _read_json(path)
    if "eval_mean_iou" not in data:
        raise HubSharingError(
            f"Results file {path} has no `eval_mean_iou`: the run evaluated without ground-truth masks (or this "
            "is not a scripts/train.py output). Pass a pseudo-label report instead."
        )
    value = _finite(data["eval_mean_iou"])
    if value is None:
        return []
    per_class = {k[len("eval_iou_") :]: _finite(v) for k, v in data.items() if k.startswith("eval_iou_")}
    if class_names is not None and per_class and set(per_class) != set(class_names):
        _check_class_names(path, sorted(per_class), sorted(class_names))
    measurement = Measurement(
        "training_eval_miou",
        value,
        path,
        num_images=data.get("eval_num_images"),
        per_class={name: per_class.get(name) for name in class_names} if class_names and per_class else per_class,
    )
    run_config = path.parent / "run_config.json"
    if run_config.is_file():
        data_args = _read_json(run_config).get("DataArguments", {})
        measurement.dataset = data_args.get("dataset")
        measurement.split = data_args.get("eval_split")
        measurement.companions.append(run_config)
    for name in ("train_results.json",):
        if (path.parent / name).is_file():
            measurement.companions.append(path.parent / name)
    return [measurement]


def read_report(path: Path, class_names: Sequence[str] | None = None) -> tuple[list[Measurement], list[str]]:
    """The mIoUs of a `metrics.json` report (`pseudo_labeling.evaluate_predictions`), one per known prediction set.
    Returns (measurements, notes on what was skipped)."""
    data = _read_json(path)
    if not isinstance(data.get("predictions"), dict) or "class_names" not in data:
        raise HubSharingError(
            f"Results file {path} is not an evaluation report (no `predictions` / `class_names`): expected the "
            "metrics.json written by scripts/pseudo_label.py, scripts/evaluate.py or scripts/train_deeplab.py."
        )
    _check_class_names(path, data["class_names"], class_names)
    companions = [path.parent / n for n in ("per_class_iou.csv", "per_class_iou.png") if (path.parent / n).is_file()]
    summary = path.parent.parent / "summary.json"  # scripts/pseudo_label.py's settings and counts
    if path.parent.name == "report" and summary.is_file():
        companions.append(summary)
    measurements, notes = [], []
    for name, entry in data["predictions"].items():
        key = REPORT_SETS.get(str(name).lower())
        if key is None:
            notes.append(f"{path}: prediction set {name!r} is none of {sorted(REPORT_SETS)}; not on the card.")
            continue
        value = _finite(entry.get("mean_iou"))
        if value is None:
            notes.append(f"{path}: {name} has no mIoU (nothing was scored); left as {NOT_MEASURED}.")
            continue
        per_class = {row["class_name"]: _finite(row.get("iou")) for row in entry.get("per_class", [])}
        measurements.append(
            Measurement(
                key,
                value,
                path,
                dataset=data.get("dataset"),
                split=data.get("split"),
                num_images=entry.get("num_scored", data.get("num_images")),
                per_class=per_class or None,
                companions=list(companions),
            )
        )
    if not measurements:
        raise HubSharingError(
            f"Results file {path} has no mIoU the card knows: prediction sets {sorted(data['predictions'])}, "
            f"known sets {sorted(REPORT_SETS)}."
        )
    return measurements, notes


def read_results(
    sources: Iterable[str | os.PathLike], class_names: Sequence[str] | None = None
) -> tuple[dict[str, Measurement], list[str]]:
    """
    Reads every results source into `{measurement key: Measurement}` (and notes on what was skipped).

    Raises:
        HubSharingError: an unknown or unreadable file, results measured on other classes, or two files giving the
            same measurement.
    """
    measurements: dict[str, Measurement] = {}
    notes: list[str] = []
    seen = set()
    for source in sources:
        for kind, path in find_results_files(source):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            if kind == "training":
                found = read_training_results(path, class_names)
            else:
                found, skipped = read_report(path, class_names)
                notes += skipped
            for measurement in found:
                if measurement.key in measurements:
                    raise HubSharingError(
                        f"Two results files give {measurement.key}: {measurements[measurement.key].source} and "
                        f"{measurement.source}. Pass only the one the card should show."
                    )
                measurements[measurement.key] = measurement
    return measurements, notes


# ----------------------------------------------------------------------------------------------- card templates


class CardTemplate(string.Template):
    """`string.Template` where only `${name}` is a placeholder: a lone `$` (shell prompts, LaTeX) stays as written."""

    pattern = r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<escaped>(?!))|(?P<named>(?!))|(?P<invalid>(?!))"


def available_cards(templates_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """`{name: template path}` of `model_cards/cpf-cte-<name>/README.md`."""
    directory = Path(templates_dir) if templates_dir is not None else CARD_TEMPLATES_DIR
    if not directory.is_dir():
        return {}
    return {
        child.name[len(CARD_DIR_PREFIX) :]: child / "README.md"
        for child in sorted(directory.iterdir())
        if child.name.startswith(CARD_DIR_PREFIX) and (child / "README.md").is_file()
    }


def resolve_card(
    card: str,
    config: CPFCTEConfig,
    run_config: Mapping | None = None,
    templates_dir: str | os.PathLike | None = None,
) -> tuple[str, Path]:
    """
    `card` ("auto", a card name, or a path to a template) -> (name, template path).

    "auto" picks the card of the dataset in the run's `run_config.json`, else of the model's classes (the 21 VOC
    classes -> voc, 81 classes -> coco). A named card must fit the model's number of classes.
    """
    cards = available_cards(templates_dir)
    listing = ", ".join(cards) or f"none found in {templates_dir or CARD_TEMPLATES_DIR}"
    if card != "auto" and card not in cards:
        path = Path(card)
        if path.is_file():
            return path.parent.name or path.stem, path
        raise HubSharingError(f"Unknown model card {card!r}. Available cards: {listing} (or a template's path).")
    num_labels = config.num_labels
    if card == "auto":
        dataset = ((run_config or {}).get("DataArguments") or {}).get("dataset")
        class_names = tuple(config.id2label[i] for i in range(num_labels))
        if dataset in cards:
            card = dataset
        elif class_names == tuple(VOC_CLASSES) and "voc" in cards:
            card = "voc"
        elif num_labels == CARD_NUM_LABELS["coco"] and "coco" in cards:
            card = "coco"
        else:
            raise HubSharingError(
                f"--card auto: no card fits this checkpoint (dataset {dataset!r}, {num_labels} classes). "
                f"Available cards: {listing}; pass --card NAME or --card PATH/TO/README.md."
            )
    expected = CARD_NUM_LABELS.get(card)
    if expected is not None and expected != num_labels:
        raise HubSharingError(
            f"Model card {card!r} is for {expected}-class models; this checkpoint has {num_labels} classes "
            f"({', '.join(list(config.id2label.values())[:5])}, ...). Pass the card of its dataset (available: "
            f"{listing}) or a template of your own (--card PATH)."
        )
    return card, cards[card]


def split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    """(YAML metadata, Markdown body) of a card that starts with `---` front matter."""
    match = re.match(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", text, flags=re.S)
    if match is None:
        raise HubSharingError(f"Model card template {path} does not start with a `---` YAML front matter block.")
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise HubSharingError(f"Model card template {path}: its front matter is not valid YAML: {error}") from error
    if not isinstance(metadata, dict):
        raise HubSharingError(f"Model card template {path}: its front matter is not a YAML mapping.")
    return metadata, text[match.end() :]


def _placeholder(value) -> str | None:
    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def _fill_strings(node, values: Mapping[str, object], path: Path):
    """Substitutes placeholders in every string of a YAML tree; a key whose value is one placeholder of a missing
    value (None) is dropped."""
    if isinstance(node, dict):
        filled = {}
        for key, value in node.items():
            name = _placeholder(value)
            if name is not None and values.get(name, "") is None:
                continue
            filled[key] = _fill_strings(value, values, path)
        return filled
    if isinstance(node, list):
        return [_fill_strings(item, values, path) for item in node]
    if isinstance(node, str):
        return _substitute(node, {k: "" if v is None else v for k, v in values.items()}, path)
    return node


def _substitute(text: str, values: Mapping[str, object], path: Path) -> str:
    template = CardTemplate(text)
    unknown = sorted(set(template.get_identifiers()) - set(values))
    if unknown:
        raise HubSharingError(
            f"Model card template {path} uses unknown placeholder(s) {', '.join('${' + u + '}' for u in unknown)}; "
            f"known: {', '.join(sorted(values))}."
        )
    return template.substitute({k: str(v) for k, v in values.items()})


def render_model_index(model_index, measurements: Mapping[str, Measurement], path: Path):
    """The template's `model-index` with every metric filled from `measurements`; metrics without a measurement,
    results left without metrics and models left without results are dropped (None when nothing is left)."""
    if model_index is None:
        return None
    if not isinstance(model_index, list):
        raise HubSharingError(f"Model card template {path}: `model-index` must be a list.")
    models = []
    for model_entry in model_index:
        results = []
        for result in model_entry.get("results") or []:
            metrics = []
            for metric in result.get("metrics") or []:
                name = _placeholder(metric.get("value"))
                if name is None:
                    raise HubSharingError(
                        f"Model card template {path}: model-index metric {metric.get('name')!r} has the literal value "
                        f"{metric.get('value')!r}. Metric values must be placeholders filled from results files: "
                        f"{', '.join('${' + k + '}' for k in MEASUREMENTS)}."
                    )
                if name not in MEASUREMENTS:
                    raise HubSharingError(
                        f"Model card template {path}: model-index value ${{{name}}} is not a measurement; known: "
                        f"{', '.join(MEASUREMENTS)}."
                    )
                if name in measurements:
                    metrics.append({**metric, "value": measurements[name].percent})
            if metrics:
                results.append({**result, "metrics": metrics})
        if results:
            models.append({**model_entry, "results": results})
    return models or None


# ------------------------------------------------------------------------------------------ card content pieces


def _fmt_percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.2f}"


def _cell(value) -> str:
    return "–" if value in (None, "") else str(value).replace("|", "\\|")


def results_table(measurements: Mapping[str, Measurement]) -> str:
    """Markdown table of every measurement the card knows, "not measured" where no results file gave it."""
    lines = [
        "| Measurement | Dataset | Split | Images | mIoU (%) | Read from |",
        "|---|---|---|---|---|---|",
    ]
    for key, description in MEASUREMENTS.items():
        m = measurements.get(key)
        if m is None:
            lines.append(f"| {description} | – | – | – | {NOT_MEASURED} | – |")
            continue
        source = f"[`{m.repo_path}`]({m.repo_path})" if m.repo_path else f"`{m.source.name}`"
        lines.append(
            f"| {description} | {_cell(m.dataset)} | {_cell(m.split)} | {_cell(m.num_images)} | "
            f"{m.percent:.2f} | {source} |"
        )
    return "\n".join(lines)


def per_class_table(measurements: Mapping[str, Measurement], class_names: Sequence[str]) -> str:
    """Markdown table of the per-class IoU (%) of every measurement that has it."""
    columns = [(key, measurements[key]) for key in MEASUREMENTS if key in measurements and measurements[key].per_class]
    if not columns:
        return f"Per-class IoU: {NOT_MEASURED}."
    short = {
        "pseudo_label_crf_miou": "pseudo-labels + CRF",
        "pseudo_label_bpm_miou": "pseudo-labels (BPM)",
        "training_eval_miou": "trainer validation",
        "deeplab_ms_crf_miou": "DeepLab-v2 MS + CRF",
        "deeplab_ms_miou": "DeepLab-v2 MS",
    }
    header = "| Class | " + " | ".join(f"{short[k]} ({_cell(m.split)})" for k, m in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]
    for name in class_names:
        lines.append(f"| {name} | " + " | ".join(_fmt_percent(m.per_class.get(name)) for _, m in columns) + " |")
    lines.append("| **mIoU** | " + " | ".join(f"**{m.percent:.2f}**" for _, m in columns) + " |")
    return "\n".join(lines)


def checkpoint_table(config: CPFCTEConfig, processor, num_parameters: int | None = None) -> str:
    """Markdown table of what this checkpoint is (from its config and image processor)."""
    vit = config.backbone_config
    size = getattr(processor, "size", None) or {}
    rows = [
        ("Classes", f"{config.num_labels} (class 0 = background)"),
        (
            "Encoder",
            f"ViT: {vit.num_hidden_layers} layers, width {vit.hidden_size}, {vit.num_attention_heads} heads, "
            f"MLP {vit.intermediate_size}, patch {config.patch_size}",
        ),
        ("Input size (image processor)", f"{size.get('height', '?')}×{size.get('width', '?')}, scaled to [-1, 1]"),
        ("Class-token fusion", "on" if config.use_class_tokens else "off (ablation)"),
        (
            "CF-BiLSTM context fusion",
            f"on ({config.lstm_hidden_size} hidden units per direction)" if config.use_context_fusion else "off",
        ),
        ("Pooling", f"Top-K, K = {config.pooling_top_k}" if config.pooling == "topk" else config.pooling),
    ]
    if num_parameters is not None:
        rows.append(("Parameters", f"{num_parameters:,}"))
    return "\n".join(["| | |", "|---|---|", *[f"| {a} | {_cell(b)} |" for a, b in rows]])


def run_table(run_config: Mapping | None, trainer_state: Mapping | None = None) -> str:
    """Markdown table of the recorded training run (`run_config.json` of scripts/train.py), or a sentence saying
    that it was not recorded."""
    if not run_config:
        return (
            "This checkpoint's training run was not recorded (no `run_config.json` next to the model): its settings "
            "are unknown to this card."
        )
    model = run_config.get("ModelArguments") or {}
    data = run_config.get("DataArguments") or {}
    train = next((v for k, v in run_config.items() if k.endswith("TrainingArguments")), None) or {}
    initialisation = model.get("model_name_or_path") or model.get("backbone") or "from scratch (random ViT)"
    stage1 = "none"
    if float(train.get("stage1_epochs") or 0) > 0 or train.get("stage1_steps"):
        length = f"{train['stage1_steps']} steps" if train.get("stage1_steps") else f"{train['stage1_epochs']} epochs"
        frozen = ", encoder frozen" if train.get("stage1_freeze_encoder") else ""
        stage1 = f"{length} at lr {train.get('stage1_learning_rate')}{frozen}"
    blocks = train.get("trainable_encoder_blocks")
    rows = [
        ("Dataset", data.get("dataset")),
        ("Training split", data.get("train_split")),
        ("Evaluation split", data.get("eval_split")),
        ("Encoder initialisation", initialisation),
        ("Training resolution", model.get("image_size")),
        ("Epochs", train.get("num_train_epochs")),
        (
            "Batch",
            f"{train.get('per_device_train_batch_size')} per device × {train.get('gradient_accumulation_steps', 1)} "
            "accumulation",
        ),
        ("Stage 1", stage1),
        (
            "Stage 2",
            f"lr {train.get('learning_rate')}, "
            + ("whole encoder trainable" if blocks == -1 else f"last {blocks} encoder blocks + final norm trainable"),
        ),
        ("Optimizer", f"{train.get('optim')}, weight decay {train.get('weight_decay')}"),
        ("Augmentation", "ViT-PCM (colour jitter, grayscale, flips, transpose)" if data.get("augment") else "off"),
        ("Pooling K", model.get("top_k")),
        ("Mixed precision", "bf16" if train.get("bf16") else "fp16" if train.get("fp16") else "off"),
        ("Seed", train.get("seed")),
    ]
    if trainer_state:
        rows.append(("Optimizer steps done", trainer_state.get("global_step")))
    lines = ["| Setting | This run |", "|---|---|", *[f"| {a} | {_cell(b)} |" for a, b in rows]]
    return "\n".join(lines)


def _hub_model_id(value) -> str | None:
    """`value` if it looks like a Hub model id (not a local path), else None."""
    if not isinstance(value, str) or os.path.exists(value) or value.startswith((".", "/", "~")):
        return None
    return value if re.fullmatch(r"[\w.-]+/[\w.-]+", value) else None


def render_model_card(
    template_path: str | os.PathLike,
    *,
    repo_id: str,
    config: CPFCTEConfig,
    processor,
    measurements: Mapping[str, Measurement],
    run_config: Mapping | None = None,
    trainer_state: Mapping | None = None,
    num_parameters: int | None = None,
    plots: Mapping[str, str] | None = None,
) -> str:
    """
    The filled model card (README.md text) of a template: front matter with the `model-index` of the measured
    values only, body placeholders filled (see the module docstring); "not measured" wherever nothing was measured.
    """
    path = Path(template_path)
    metadata, body = split_front_matter(path.read_text(encoding="utf-8"), path)
    class_names = [config.id2label[i] for i in range(config.num_labels)]
    values: dict[str, object] = {
        "repo_id": repo_id,
        "model_name": repo_id.split("/")[-1],
        "num_labels": config.num_labels,
        "class_names": ", ".join(f"`{name}`" for name in class_names),
        "results_table": results_table(measurements),
        "per_class_table": per_class_table(measurements, class_names),
        "per_class_plots": "\n\n".join(f"![{title}]({file})" for title, file in (plots or {}).items()),
        "checkpoint_table": checkpoint_table(config, processor, num_parameters),
        "run_table": run_table(run_config, trainer_state),
    }
    yaml_values = dict(values)
    for key in MEASUREMENTS:
        base = key[: -len("_miou")]
        m = measurements.get(key)
        values[key] = f"{m.percent:.2f} %" if m else NOT_MEASURED
        for suffix, attribute in (("split", "split"), ("dataset", "dataset"), ("num_images", "num_images")):
            found = getattr(m, attribute) if m else None
            values[f"{base}_{suffix}"] = "–" if found is None else found
            yaml_values[f"{base}_{suffix}"] = found
        yaml_values[key] = None

    metadata = copy.deepcopy(metadata)
    model_index = render_model_index(metadata.pop("model-index", None), measurements, path)
    if run_config is None:  # how the encoder was initialised is not recorded: claim no base model
        metadata.pop("base_model", None)
    elif "base_model" in metadata:
        model_args = run_config.get("ModelArguments") or {}
        base_model = _hub_model_id(model_args.get("model_name_or_path") or model_args.get("backbone"))
        if base_model is None:  # from scratch or a local checkpoint: nothing on the Hub to point at
            metadata.pop("base_model")
        else:
            metadata["base_model"] = base_model
    metadata = _fill_strings(metadata, yaml_values, path)
    if model_index is not None:
        metadata["model-index"] = _fill_strings(model_index, yaml_values, path)
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    text = f"---\n{front}---\n{_substitute(body, values, path)}"
    _validate_card(text, path, sum(len(r["metrics"]) for m in model_index or [] for r in m["results"]))
    return text


def _validate_card(text: str, template_path: Path, expected_metrics: int) -> None:
    """The Hub's own parser must read the card and find exactly the measured metrics."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except Exception as error:  # noqa: BLE001 - any parse failure is a template bug; name the template
        raise HubSharingError(
            f"The card rendered from {template_path} is not a valid Hub model card: {error}"
        ) from error
    found = len(card.data.eval_results or [])
    if found != expected_metrics:
        raise HubSharingError(
            f"The card rendered from {template_path}: the Hub reads {found} results from its model-index, "
            f"{expected_metrics} were filled in; check the template's model-index entries."
        )


# ------------------------------------------------------------------------------------------------- Hub folder


@dataclass
class HubFolder:
    """What `build_hub_folder` wrote."""

    path: Path
    repo_id: str
    card: str
    measurements: dict[str, Measurement]
    not_measured: list[str]
    notes: list[str]
    files: list[str]


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The checkpoint directory, after checking it holds a config, weights and an image processor config."""
    path = Path(model_dir)
    if not path.is_dir():
        raise HubSharingError(f"--model {path}: no such directory.")
    if not (path / "config.json").is_file():
        raise HubSharingError(f"--model {path}: no config.json in it; not a saved checkpoint.")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise HubSharingError(f"--model {path}: no weights in it (expected one of {', '.join(WEIGHT_FILES)}).")
    if not (path / "preprocessor_config.json").is_file():
        raise HubSharingError(
            f"--model {path}: no preprocessor_config.json (the image processor); save it next to the model with "
            "`CPFCTEImageProcessor(...).save_pretrained(dir)` (scripts/train.py does)."
        )
    model_type = _read_json(path / "config.json").get("model_type")
    if model_type != CPFCTEConfig.model_type:
        raise HubSharingError(
            f"--model {path}: config.json has model_type {model_type!r}, not {CPFCTEConfig.model_type!r}; "
            "this script shares CPF-CTE checkpoints."
        )
    return path


def check_repo_id(repo_id: str) -> str:
    """`USER/NAME` (or `ORG/NAME`), valid for the Hub."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubSharingError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {error}") from error
    if repo_id.count("/") != 1:
        raise HubSharingError(f"--repo-id {repo_id!r}: expected USER/NAME (or ORG/NAME).")
    return repo_id


def _load_checkpoint(model_dir: Path):
    from .image_processing_cpfcte import CPFCTEImageProcessor
    from .modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    model, info = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(model_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v} | (
        {"errors": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if problems:
        raise HubSharingError(f"--model {model_dir}: the weights do not match the config: {problems}")
    return model, CPFCTEImageProcessor.from_pretrained(model_dir)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_same_model(measurement: Measurement, model_path: Path) -> None:
    """A pseudo-label report whose `summary.json` names a local model directory must be of these weights."""
    summary = next((p for p in measurement.companions if p.name == "summary.json"), None)
    recorded = _read_json(summary).get("model") if summary is not None else None
    if not recorded or not Path(recorded).is_dir():
        return  # a Hub id, or a directory that has moved since: nothing to compare with
    recorded = Path(recorded)
    if recorded.resolve() == model_path.resolve():
        return
    mine, theirs = model_path / "model.safetensors", recorded / "model.safetensors"
    if mine.is_file() and theirs.is_file() and _sha256(mine) == _sha256(theirs):
        return
    raise HubSharingError(
        f"Results file {measurement.source} was made with the model in {recorded} (see {summary}), whose weights "
        f"are not those of --model {model_path}."
    )


def _copy_results(measurements: Mapping[str, Measurement], folder: Path) -> dict[str, str]:
    """Copies each results file (and its companions) under `folder/results/<group>/`; sets `repo_path`.
    Returns `{plot title: repo path}` of the per-class plots."""
    targets: dict[Path, str] = {}  # source file -> its folder in the repo
    plots = {}
    for key, m in measurements.items():
        source = m.source.resolve()
        if source not in targets:
            group, n = RESULT_GROUPS[key], 1
            while f"results/{group}" in targets.values():
                n += 1
                group = f"{RESULT_GROUPS[key]}_{n}"
            targets[source] = f"results/{group}"
            destination = folder / targets[source]
            destination.mkdir(parents=True, exist_ok=True)
            for file in (m.source, *m.companions):
                shutil.copy2(file, destination / file.name)
                if file.name == "per_class_iou.png":
                    plots[f"Per-class IoU: {group.replace('_', ' ')}"] = f"{targets[source]}/{file.name}"
        m.repo_path = f"{targets[source]}/{m.source.name}"
    return plots


def _results_record(repo_id: str, config: CPFCTEConfig, measurements, folder: Path) -> dict:
    from . import __version__

    return {
        "generated_by": f"cpfcte_hf {__version__} (cpfcte_hf.hub)",
        "repo_id": repo_id,
        "metric": "mean_iou over all classes, background included, one confusion matrix per split, 255 ignored",
        "class_names": [config.id2label[i] for i in range(config.num_labels)],
        "measurements": {
            key: {
                "description": MEASUREMENTS[key],
                "mean_iou": m.mean_iou,
                "mean_iou_percent": m.percent,
                "dataset": m.dataset,
                "split": m.split,
                "num_images": m.num_images,
                "source_file": m.repo_path,
                "source_sha256": _sha256(folder / m.repo_path),
            }
            for key, m in measurements.items()
        },
        "not_measured": [key for key in MEASUREMENTS if key not in measurements],
    }


@dataclass
class HubFolderPlan:
    """Everything `build_hub_folder` needs, read and checked before any weights are loaded (see `plan_hub_folder`)."""

    model_path: Path
    repo_id: str
    config: CPFCTEConfig
    card: str
    template: Path
    measurements: dict[str, Measurement]
    notes: list[str]
    run_config: dict | None = None
    trainer_state: dict | None = None


def plan_hub_folder(
    model_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    templates_dir: str | os.PathLike | None = None,
) -> HubFolderPlan:
    """
    Checks every input of a Hub folder and reads the results, without loading the model.

    Raises:
        HubSharingError: a bad model directory, card, results source or repo id (the message names it).
    """
    repo_id = check_repo_id(repo_id)
    model_path = check_model_dir(model_dir)
    config = CPFCTEConfig.from_pretrained(model_path)
    run_config = _read_json(model_path / "run_config.json") if (model_path / "run_config.json").is_file() else None
    card_name, template = resolve_card(card, config, run_config, templates_dir)

    sources = list(results)
    own = model_path / "eval_results.json"
    if own.is_file() and "eval_mean_iou" in _read_json(own):
        sources.insert(0, own)
    class_names = [config.id2label[i] for i in range(config.num_labels)]
    measurements, notes = read_results(sources, class_names)
    for m in measurements.values():
        if card_name in CARD_NUM_LABELS and m.dataset not in (None, card_name):
            raise HubSharingError(f"Results file {m.source} was measured on {m.dataset!r}; the card is {card_name!r}.")
        _check_same_model(m, model_path)
    if run_config is None:
        training = measurements.get("training_eval_miou")
        if training is not None and (training.source.parent / "run_config.json").is_file():
            run_config = _read_json(training.source.parent / "run_config.json")
    state_path = model_path / "trainer_state.json"
    trainer_state = _read_json(state_path) if state_path.is_file() else None
    return HubFolderPlan(
        model_path, repo_id, config, card_name, template, measurements, notes, run_config, trainer_state
    )


def _check_output_dir(out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if overwrite and (out / RESULTS_FILE).is_file() and "generated_by" in _read_json(out / RESULTS_FILE):
        return
    hint = " (--overwrite only replaces a folder this script wrote)." if overwrite else " or pass --overwrite."
    raise HubSharingError(f"--dry-run {out}: exists and is not empty. Choose a new folder{hint}")


def build_hub_folder(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    templates_dir: str | os.PathLike | None = None,
    plan: HubFolderPlan | None = None,
) -> HubFolder:
    """
    Writes the Hub folder of a trained checkpoint (see the module docstring) to `out_dir`.

    Args:
        model_dir: a saved CPF-CTE checkpoint (e.g. the output directory of scripts/train.py).
        out_dir: where to write; must not exist, be empty, or (with `overwrite`) be a folder this function wrote.
            The folder is written next to it and renamed into place, so it is never left half-written.
        repo_id: `USER/NAME`, shown in the card's usage examples.
        card: "auto", a card name of `model_cards/` ("voc", "coco") or a template path.
        results: results files or directories (the model directory's own `eval_results.json` is always read).
        plan: the result of `plan_hub_folder` for these arguments, if already made.

    Raises:
        HubSharingError: a bad model directory, card, results source, repo id or output folder (message names it).
    """
    out = Path(out_dir)
    _check_output_dir(out, overwrite)
    plan = plan or plan_hub_folder(model_dir, repo_id, card, results, templates_dir)
    model, processor = _load_checkpoint(plan.model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        missing = [name for name in SOURCE_FILES if not (staging / name).is_file()]
        if missing or "auto_map" not in _read_json(staging / "config.json"):
            raise HubSharingError(
                f"save_pretrained wrote no auto_map / source files {missing}: import cpfcte_hf (which registers the "
                "classes for remote code) before building the Hub folder."
            )
        plots = _copy_results(plan.measurements, staging)
        text = render_model_card(
            plan.template,
            repo_id=plan.repo_id,
            config=model.config,
            processor=processor,
            measurements=plan.measurements,
            run_config=plan.run_config,
            trainer_state=plan.trainer_state,
            num_parameters=model.num_parameters(),
            plots=plots,
        )
        (staging / "README.md").write_text(text, encoding="utf-8")
        record = _results_record(plan.repo_id, model.config, plan.measurements, staging)
        (staging / RESULTS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    not_measured = [k for k in MEASUREMENTS if k not in plan.measurements]
    return HubFolder(out, plan.repo_id, plan.card, plan.measurements, not_measured, plan.notes, files)


# ------------------------------------------------------------------------------------------------------- push


def resolve_push_token(token: str | None = None) -> str:
    """The token to push with (argument, `HF_TOKEN`, or `hf auth login`'s), after checking offline mode.

    Raises:
        HubPushError: `HF_HUB_OFFLINE` is set, or no token is available.
    """
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "HF_HUB_OFFLINE is set: pushing needs the network. Unset HF_HUB_OFFLINE, or write the folder with "
            "--dry-run DIR and upload it later (`hf upload USER/NAME DIR`)."
        )
    token = token or get_token()
    if not token:
        raise HubPushError(
            "No Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens); or write the folder with --dry-run DIR."
        )
    return token


def upload_hub_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Creates `repo_id` (if needed) and uploads `folder` in one commit; returns the commit URL.

    Results files of an earlier push that this folder no longer has are deleted in the same commit. `endpoint`:
    another Hub than `HF_ENDPOINT` (default https://huggingface.co).
    """
    from huggingface_hub import HfApi, constants

    token = resolve_push_token(token)
    api = HfApi(token=token, endpoint=endpoint)
    try:
        repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or "Upload CPF-CTE checkpoint, model card and results (cpfcte_hf)",
            delete_patterns=["results/*"],
        )
    except Exception as error:  # noqa: BLE001 - network, auth and Hub errors alike end in one clear message
        where = f"{(endpoint or constants.ENDPOINT).rstrip('/')}/{repo_id}"
        raise HubPushError(f"Could not push to {where}: {type(error).__name__}: {error}") from error
    return getattr(commit, "commit_url", None) or str(commit)


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    templates_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> tuple[HubFolder, str]:
    """
    Builds the Hub folder of `model_dir` in a temporary directory and uploads it to `repo_id`.

    The inputs and the token are checked before anything is built. Returns (what was built, the commit URL).

    Raises:
        HubSharingError: bad inputs (see `build_hub_folder`).
        HubPushError: offline, no token, or the Hub call failed (the message says which).
    """
    plan = plan_hub_folder(model_dir, repo_id, card, results, templates_dir)
    resolve_push_token(token)
    with tempfile.TemporaryDirectory(prefix="cpfcte-hub-") as tmp:
        folder = build_hub_folder(model_dir, Path(tmp) / "repo", repo_id, plan=plan)
        url = upload_hub_folder(
            folder.path, repo_id, private=private, token=token, commit_message=commit_message, endpoint=endpoint
        )
    return folder, url


def format_hub_folder(folder: HubFolder) -> str:
    """A few lines for the console: card, measured and unmeasured values, files."""
    lines = [f"Hub folder for {folder.repo_id} (card: {folder.card}) in {folder.path}"]
    for key, m in folder.measurements.items():
        where = ", ".join(str(v) for v in (m.dataset, m.split) if v is not None) or "dataset/split not recorded"
        lines.append(f"  {key}: {m.percent:.2f} % ({where}) from {m.source}")
    if folder.not_measured:
        lines.append(f"  {NOT_MEASURED}: {', '.join(folder.not_measured)}")
    lines += [f"  note: {note}" for note in folder.notes]
    lines.append("  files: " + ", ".join(folder.files))
    return "\n".join(lines)


__all__ = [
    "CARD_TEMPLATES_DIR",
    "MEASUREMENTS",
    "NOT_MEASURED",
    "HubFolder",
    "HubFolderPlan",
    "HubPushError",
    "HubSharingError",
    "Measurement",
    "available_cards",
    "build_hub_folder",
    "check_model_dir",
    "find_results_files",
    "format_hub_folder",
    "plan_hub_folder",
    "push_to_hub",
    "read_results",
    "render_model_card",
    "resolve_card",
    "resolve_push_token",
    "upload_hub_folder",
]
