# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Sharing a trained CPF-CTE checkpoint on the Hugging Face Hub: the Hub folder, its model card, the push.

The Hub folder holds everything a user needs, with or without this package:

```
config.json, model.safetensors        the model, `auto_map` in the config (remote code)
preprocessor_config.json              CPFCTEImageProcessor
configuration_cpfcte.py, modeling_cpfcte.py, image_processing_cpfcte.py     for `trust_remote_code=True`
README.md                             the model card: `model_cards/template.md` rendered with `ModelCard.from_template`
results.json                          every measurement on the card: value, dataset, split, the file it came from
results/<group>/...                   copies of those results files (`results.py` schema) and their plots
training/run_config.json, trainer_state.json      the stage-1 training run as recorded (when it was)
```

Card rule: a number on the card comes from a results file the project wrote (`results.py`), never from the
template; a value without one is "not measured" and has no `model-index` entry. The card names the dataset and the
classes of the run it describes, from what the run recorded (`run_config.json`, the results files) and the model's
own class names, never from a class count. The paper's numbers and recipe appear only for VOC and COCO, labelled as
the paper's. Every other statement about the run is rendered from its records too (`card_facts`): the inference size
(`config.inference_size`), each pseudo-labelling run's size, scales, flip, tags and CRF (its results file's
`settings`), the stage-1 training as run (`run_config.json`, and `trainer_state.json` for the steps and epochs done),
and each stage-2 model's architecture, training and test scales (its results file's `model_info` and `settings`).
No file of the folder holds an absolute local path: each becomes `…/<last component>` (`public_text`).
What the card says besides the run's records (values, datasets, tags) is in `model_cards/cards.yaml`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from .configuration_cpfcte import VOC_CLASSES, CPFCTEConfig
from .results import PREDICTION_SET_STAGES, Results, ResultsError, find_results, read_json, read_results


CARDS_DIR = Path(__file__).resolve().parent / "model_cards"
CARD_TEMPLATE = CARDS_DIR / "template.md"
_CARDS = yaml.safe_load((CARDS_DIR / "cards.yaml").read_text(encoding="utf-8"))
_SPECS = _CARDS["measurements"]  # key -> stage, prediction set, description, metric name, short name, optional
# The values every card lists, "not measured" when no results file gives them; an optional one shows when measured.
MEASUREMENTS = {key: spec["description"] for key, spec in _SPECS.items() if not spec.get("optional")}
_BY_SET = {(spec["stage"], spec["set"]): key for key, spec in _SPECS.items()}
NOT_MEASURED = "not measured"
RESULTS_FILE = "results.json"
# The stage-1 training records written to the Hub folder: path in the folder -> attribute of `HubFolder`.
TRAINING_RECORDS = {"training/run_config.json": "run_config", "training/trainer_state.json": "trainer_state"}


class HubSharingError(ValueError):
    """A bad input to the sharing step: model directory, card template, results file, repo id, output folder."""


class HubPushError(RuntimeError):
    """The push itself could not happen: offline mode, no token, the Hub unreachable or refusing."""


@dataclass(frozen=True)
class DatasetCard:
    """What the card says about the dataset of the run: `key` is the card's name ("voc", "coco", "shapes", ...)."""

    key: str
    name: str
    description: str
    loader: str
    class_names: tuple[str, ...] | None = None
    hub_datasets: Sequence[str] = ()
    tags: Sequence[str] = ()
    paper: Sequence[Sequence[str]] = ()  # (what, split, mIoU %) as the CPF-CTE paper reports them (cards.yaml)
    train_split: str = "train"
    example_image: str = "photo.jpg"
    bias: str | None = None


@cache
def _known_datasets() -> dict[str, DatasetCard]:
    from .data.coco import COCO_CLASSES

    classes = {"voc": tuple(VOC_CLASSES), "coco": tuple(COCO_CLASSES)}
    return {key: DatasetCard(key, class_names=classes[key], **spec) for key, spec in _CARDS["datasets"].items()}


def available_cards() -> dict[str, str]:
    """`{card name: dataset}` of the datasets with a card of their own (`--card NAME`); any other run gets the card
    of what it recorded (`--card auto`)."""
    return {key: card.name for key, card in _known_datasets().items()}


def describe_dataset(class_names: Sequence[str], recorded: Sequence[tuple[str | None, str | None]]) -> DatasetCard:
    """
    The dataset of a checkpoint, from what its run recorded (`(dataset, data_root)` pairs of `run_config.json` and
    the results files) and the model's class names. VOC and COCO are named only when the classes are theirs; a
    model whose classes are the procedural shapes' is "shapes"; any other run by what it recorded (cards.yaml).

    Raises:
        HubSharingError: the records name different datasets.
    """
    from .data.shapes import BACKGROUND, SHAPE_NAMES

    names = {name for name, _ in recorded if name}
    if len(names) > 1:
        raise HubSharingError(f"The run's records name different datasets {sorted(names)}: one card per dataset.")
    name = names.pop() if names else None
    root = next((root for _, root in recorded if root), None)
    classes, known = tuple(class_names), _known_datasets()
    for card in known.values():
        if classes == card.class_names and name in (None, card.key):
            return card
    if classes == (BACKGROUND, *SHAPE_NAMES[: len(classes) - 1]) and name in (None, "shapes", "voc"):
        kind, name = "shapes", "shapes"
    elif name in known or name == "tagged" or (name == "hub" and root and public_text(root) == root):
        kind = "layout" if name in known else name
    else:
        kind = "named" if name else "unrecorded"
    where = f" (`{os.path.basename(os.path.normpath(root))}`)" if root else ""
    fill = {"where": where, "root": root, "dataset": name, "num_objects": len(classes) - 1}  # root: a Hub id here
    fill["layout"] = known[name].name if name in known else None
    spec = {k: v.format(**fill) if isinstance(v, str) else v for k, v in _CARDS["other_datasets"][kind].items()}
    spec.setdefault("loader", name or "tagged")
    if kind == "hub":
        spec["hub_datasets"] = (root,)
    return DatasetCard(name or "custom", class_names=classes, **spec)


# ---------------------------------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One mIoU of a results file: a key of `cards.yaml`'s measurements, value in [0, 1], where it was measured."""

    key: str
    mean_iou: float
    results: Results
    per_class: dict[str, float | None]
    repo_path: str | None = None  # where the results file lies in the Hub folder, once copied

    source = property(lambda self: self.results.path)
    dataset = property(lambda self: self.results.dataset)
    split = property(lambda self: self.results.split)

    @property
    def percent(self) -> float:
        """The mIoU in %, rounded to 2 decimals: the value on the card and in its `model-index`."""
        return round(100.0 * self.mean_iou, 2)


def _card_key(results: Results, name: str) -> str | None:
    """The measurement of prediction set `name` of `results`, None if the card does not show it. `evaluate` names
    sets after folders (bpm, ms_crf); pseudo-labels made without the tags and a single-scale stage 2 are
    measurements of their own, told apart by the settings the file records."""
    name = str(name).upper().replace("_", "+")
    stage = PREDICTION_SET_STAGES.get(name.lower()) if results.stage == "evaluation" else results.stage
    if stage == "pseudo_labels" and results.settings.get("use_image_labels") is False:
        name = f"UNTAGGED {name}"
    if stage == "stage2" and len(results.settings.get("scales") or ()) == 1:
        name = name.replace("MS", "SS")
    return _BY_SET.get((stage, name))


def collect_measurements(
    sources: Sequence[str | os.PathLike], class_names: Sequence[str]
) -> tuple[dict[str, Measurement], list[str], list[Results]]:
    """
    Reads every results source (`results.find_results`) into `{key: Measurement}` (`key@split` for a second split
    of one value), notes on what was skipped, and the results files read.

    Raises:
        ResultsError: an unknown or unreadable file, or results of other classes.
        HubSharingError: two files give one value on one split, or no file gives any value the card knows.
    """
    paths = {}  # the first spelling of each file
    for path in (path for source in sources for path in find_results(source)):
        paths.setdefault(path.resolve(), path)
    measurements, notes, read = {}, [], [read_results(path, class_names) for path in paths.values()]
    for results in read:
        for name in results.predictions:
            key, value = _card_key(results, name), results.mean_iou(name)
            if key is None or value is None:
                why = "has no mIoU (nothing was scored)" if key else "is no value the card shows"
                notes.append(f"{results.path}: {results.stage} prediction set {name!r} {why}; not on the card.")
                continue
            slot = key if key not in measurements or results.split in (None, measurements[key].split) else None
            slot = slot or f"{key}@{results.split}"
            if slot in measurements:
                raise HubSharingError(
                    f"Two results files give {key} on the same split: {measurements[slot].source} and "
                    f"{results.path}. Pass only the one the card should show."
                )
            measurements[slot] = Measurement(key, value, results, results.per_class_iou(name))
    if not measurements and read:
        raise HubSharingError(f"No value the card knows in {', '.join(str(r.path) for r in read)}: {notes}")
    return measurements, notes, read


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_same_model(measurement: Measurement, model_path: Path) -> None:
    """A stage-1 result recording a local model directory must be of these weights (stage 2's is another model)."""
    recorded = measurement.results.model
    if measurement.key.startswith("deeplab") or not recorded or not Path(recorded).is_dir():
        return  # stage 2, a Hub id, or a directory that has moved since: nothing to compare with
    mine, theirs = model_path / "model.safetensors", Path(recorded) / "model.safetensors"
    if Path(recorded).resolve() == model_path.resolve() or (
        mine.is_file() and theirs.is_file() and _sha256(mine) == _sha256(theirs)
    ):
        return
    raise HubSharingError(
        f"Results file {measurement.source} was made with the model in {recorded}, whose weights are not those of "
        f"--model {model_path}."
    )


# ------------------------------------------------------------------------------------------- local paths

# An absolute path of the machine that wrote a record: POSIX (not part of a URL or of a relative path) or Windows.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~…-])(?:/|[A-Za-z]:[\\/])[^\s\"'<>|,;:]+")
LOCAL_PATH_PREFIX = "…/"  # markdown-safe (no HTML tag), read as "a path shortened"


def _shorten(match: re.Match) -> str:
    parts = [part for part in re.split(r"[\\/]", match.group(0)) if part]
    return LOCAL_PATH_PREFIX + (parts[-1] if parts else "")


def public_text(text: str) -> str:
    """`text` with every absolute local path replaced by `…/<its last component>`: what the Hub folder may say of
    the machine that made a run (the data folder's name, not the user's directories)."""
    return _ABSOLUTE_PATH.sub(_shorten, text)


def public_value(value):
    """A JSON value (`public_text` on every string, keys included)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, Mapping):
        return {public_text(str(key)): public_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(item) for item in value]
    return value


def _write_public_json(value, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public_value(value), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy_public(source: Path, target: Path) -> None:
    """Copies a results file or companion with its local paths shortened (`public_text`); images as they are."""
    if source.suffix == ".json":
        _write_public_json(json.loads(source.read_text(encoding="utf-8")), target)
    elif source.suffix in (".csv", ".txt", ".md", ".yaml", ".yml"):
        target.write_text(public_text(source.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------- what the runs recorded, in words


def _number(value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


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


def _deeplab_initialisation(model: Mapping) -> str:
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
    optimizer = (
        f"{train.get('optim')}, lr {_number(train.get('learning_rate'))} "
        f"({_number(train.get('classifier_lr_multiplier'))}× on the ASPP), weight decay "
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
    """The DeepLab-v2 models of the stage-2 values, each `{"rows": [(setting, value)], "tests": [(file, how)]}`
    from what its results files recorded (one entry per distinct model; `known` False for files without
    `model_info`)."""
    models: dict[str, dict] = {}
    for m in measurements.values():
        if m.results.stage != "stage2":
            continue
        info = m.results.model_info
        entry = models.setdefault(json.dumps(info, sort_keys=True), {"known": bool(info), "rows": [], "tests": {}})
        if info and not entry["rows"]:
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


def inference_size_text(config: CPFCTEConfig) -> str:
    """The pseudo-labelling pipeline's default size for this checkpoint, and where it comes from."""
    from .inference import DEFAULT_INFERENCE_SIZE

    if config.inference_size:
        return f"{config.inference_size} (this checkpoint's `config.inference_size`)"
    return f"{DEFAULT_INFERENCE_SIZE} (the pipeline's default: this checkpoint records no `config.inference_size`)"


# -------------------------------------------------------------------------------------------------- the card


def _cell(value) -> str:
    return "–" if value in (None, "") else str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def results_table(measurements: Mapping[str, Measurement]) -> str:
    """Every value the card knows, "not measured" where no results file gave it (an optional one only if given)."""
    rows = []
    for key, spec in _SPECS.items():
        found = [m for m in measurements.values() if m.key == key]
        if not found and not spec.get("optional"):
            rows.append((spec["description"], None, None, None, NOT_MEASURED, None))
        for m in found:
            source = f"[`{m.repo_path}`]({m.repo_path})" if m.repo_path else f"`{m.source.name}`"
            rows.append((spec["description"], m.dataset, m.split, m.results.num_images, f"{m.percent:.2f}", source))
    return _table(("Measurement", "Dataset", "Split", "Images", "mIoU (%)", "Read from"), rows)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100.0 * value:.2f}"


def per_class_table(measurements: Mapping[str, Measurement], class_names: Sequence[str]) -> str:
    """Per-class IoU (%) of every measurement that has it."""
    columns = [m for key in _SPECS for m in measurements.values() if m.key == key and m.per_class]
    if not columns:
        return f"Per-class IoU: {NOT_MEASURED}."
    header = ["Class", *[f"{_SPECS[m.key]['short']} ({_cell(m.split)})" for m in columns]]
    rows = [(name, *[_percent(m.per_class.get(name)) for m in columns]) for name in class_names]
    return _table(header, [*rows, ("**mIoU**", *[f"**{m.percent:.2f}**" for m in columns])])


def _hub_model_id(value) -> str | None:
    """`value` if it looks like a Hub model id (not a local path), else None."""
    if not isinstance(value, str) or os.path.exists(value) or value.startswith((".", "/", "~")):
        return None
    return value if re.fullmatch(r"[\w.-]+/[\w.-]+", value) else None


def card_facts(folder: HubFolder) -> dict:
    """
    What the card says about the run beyond its numbers, every value from the run's records (template variables):
    `run` (stage-1 training: `model`, `data`, `train` sections of `run_config.json`, `steps`, `rows` of the
    "this run" table; None when not recorded), `inference_size` (the pipeline's default size and its source),
    `pipeline_size`, `label_rows` / `label_table` (the settings of each recorded pseudo-labelling run),
    `pipeline_crf` (the pipeline's default CRF), `stage2` (`stage2_models`, with `table` and `tests_table`),
    `train_split`, `training_records` (the files of `TRAINING_RECORDS` written). Local paths are shortened
    (`public_text`).
    """
    from .crf import DenseCRFConfig
    from .inference import DEFAULT_INFERENCE_SIZE

    run_config, state = folder.run_config, folder.trainer_state
    run = None
    if run_config:
        run = public_value({
            "model": run_config.get("ModelArguments") or {},
            "data": run_config.get("DataArguments") or {},
            "train": next((v for k, v in run_config.items() if k.endswith("TrainingArguments")), None) or {},
            "steps": (state or {}).get("global_step"),
        })  # fmt: skip
        run["rows"] = training_rows(run_config, state)
        run["table"] = _table(("Setting", "This run"), run["rows"])
    label_rows = pseudo_label_rows(folder.measurements, folder.config.patch_size)
    label_header = ("Split", "Results file", "Size", "Scales (views averaged)", "Flip", "Tags", "Dense CRF")
    stage2 = stage2_models(folder.measurements)
    for model in stage2:
        model["table"] = _table(("Setting", "Value"), model["rows"])
        model["tests_table"] = _table(("Results file", "Split", "Tested"), model["tests"])
    return {
        "run": run,
        "inference_size": inference_size_text(folder.config),
        "pipeline_size": folder.config.inference_size or DEFAULT_INFERENCE_SIZE,
        "label_rows": label_rows,
        "label_table": _table(label_header, label_rows) if label_rows else None,
        "pipeline_crf": crf_text({"crf_config": DenseCRFConfig().to_dict()}),
        "stage2": stage2,
        "train_split": (run or {}).get("data", {}).get("train_split") or folder.dataset.train_split,
        "training_records": [name for name, record in TRAINING_RECORDS.items() if getattr(folder, record)],
    }


def render_model_card(folder: HubFolder, processor, num_parameters: int | None = None, plots: Mapping | None = None):
    """
    The model card (`huggingface_hub.ModelCard`) of a planned Hub folder (`plan_hub_folder`): `ModelCardData` with
    the `model-index` (`EvalResult`s, in %) of the measured values only, and the folder's Jinja template rendered by
    `ModelCard.from_template`. `plots`: `{title: path in the folder}` of per-class plots.

    Raises:
        HubSharingError: the template does not render, or its front matter adds metrics of its own.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    config, dataset, measurements = folder.config, folder.dataset, folder.measurements
    class_names = [config.id2label[i] for i in range(config.num_labels)]
    model_args = (folder.run_config or {}).get("ModelArguments") or {}
    results = [
        EvalResult(
            task_type="image-segmentation", task_name=_CARDS["task_name"], dataset_type=dataset.key,
            dataset_name=dataset.name, dataset_split=m.split, metric_type="mean_iou",
            metric_name=_SPECS[m.key]["metric"], metric_value=m.percent,
        )
        for m in measurements.values()
    ]  # fmt: skip
    data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-segmentation",
        base_model=_hub_model_id(model_args.get("model_name_or_path") or model_args.get("backbone")),
        datasets=list(dataset.hub_datasets) or None,
        tags=_CARDS["tags"] + list(dataset.tags),
        metrics=["mean_iou"],
        model_name=folder.repo_id.split("/")[-1],
        eval_results=results or None,
    )
    try:
        card = ModelCard.from_template(
            data, template_path=str(folder.template), repo_id=folder.repo_id, dataset=dataset, config=config,
            vit=config.backbone_config, num_labels=config.num_labels, num_parameters=num_parameters,
            class_names=", ".join(f"`{name}`" for name in class_names), size=getattr(processor, "size", None) or {},
            example_tags=json.dumps(class_names[1:3] or class_names[:1]), not_measured=NOT_MEASURED, cell=_cell,
            results_table=results_table(measurements), per_class_table=per_class_table(measurements, class_names),
            per_class_plots=list((plots or {}).items()), **card_facts(folder),
        )  # fmt: skip
        parsed = ModelCard(str(card)).data.eval_results or []
    except Exception as error:  # noqa: BLE001 - a Jinja or YAML error is a template bug: name the template
        raise HubSharingError(
            f"The card rendered from {folder.template} is not a valid model card: {error}"
        ) from error
    ours = {(r.metric_name, r.metric_value, r.dataset_split) for r in results}
    for result in parsed:
        if (result.metric_name, result.metric_value, result.dataset_split) not in ours:
            raise HubSharingError(
                f"Model card template {folder.template}: model-index metric {result.metric_name!r} has the literal "
                f"value {result.metric_value!r}. Values on the card come from results files only."
            )
    return card


# ------------------------------------------------------------------------------------------------ Hub folder


@dataclass
class HubFolder:
    """A Hub folder: what `plan_hub_folder` read and checked before any weights are loaded, then (`path`, `files`)
    what `build_hub_folder` wrote."""

    model_path: Path
    repo_id: str
    config: CPFCTEConfig
    template: Path
    dataset: DatasetCard
    measurements: dict[str, Measurement]
    notes: list[str]
    run_config: dict | None = None
    trainer_state: dict | None = None
    path: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def card(self) -> str:
        return self.dataset.key

    @property
    def not_measured(self) -> list[str]:
        """The values every card lists that no results file gave."""
        return [key for key in MEASUREMENTS if key not in {m.key for m in self.measurements.values()}]


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The checkpoint directory, after checking it holds a CPF-CTE config, weights and an image processor config."""
    from .pseudo_labeling import check_checkpoint_dir

    path = Path(model_dir)
    if not path.is_dir():
        raise HubSharingError(f"--model {path}: no such directory.")
    try:
        check_checkpoint_dir(path)
    except FileNotFoundError as error:
        raise HubSharingError(f"--model {path}: {error}") from error
    if not (path / "preprocessor_config.json").is_file():
        raise HubSharingError(
            f"--model {path}: no preprocessor_config.json (the image processor); save it next to the model with "
            "`CPFCTEImageProcessor(...).save_pretrained(dir)` (training does)."
        )
    model_type = read_json(path / "config.json").get("model_type")
    if model_type != CPFCTEConfig.model_type:
        raise HubSharingError(
            f"--model {path}: config.json has model_type {model_type!r}, not {CPFCTEConfig.model_type!r}; "
            "this command shares CPF-CTE checkpoints."
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


def plan_hub_folder(
    model_dir: str | os.PathLike, repo_id: str, card: str = "auto", results: Sequence[str | os.PathLike] = ()
) -> HubFolder:
    """
    Checks every input of a Hub folder and reads the results, without loading the model. `repo_id`: `USER/NAME`,
    shown in the card's usage examples. `card`: "auto" (the dataset the run recorded), a name of `available_cards()`
    (must fit the model's classes), or a template's path. `results`: results files or directories
    (`results.find_results`); the model directory's own final evaluation is always read.

    Raises:
        HubSharingError: a bad model directory, card, results source or repo id (the message names it).
    """
    repo_id, template, known = check_repo_id(repo_id), CARD_TEMPLATE, _known_datasets()
    if card not in ("auto", *known):
        if not Path(card).is_file():
            raise HubSharingError(
                f"Unknown model card {card!r}. Available cards: {', '.join(sorted(known))} (or auto, or a "
                "template's path)."
            )
        template, card = Path(card), "auto"
    try:  # an unreadable JSON file (`results.read_json`) is a bad input too
        model_path = check_model_dir(model_dir)
        config = CPFCTEConfig.from_pretrained(model_path)
        class_names = [config.id2label[i] for i in range(config.num_labels)]
        if card in known and tuple(class_names) != known[card].class_names:
            raise HubSharingError(
                f"Model card {card!r} is for {len(known[card].class_names)}-class models; this checkpoint has "
                f"{len(class_names)} classes ({', '.join(class_names[:5])}, ...), not those of {known[card].name}. "
                "Use --card auto (the card of the dataset the run recorded) or a template of your own (--card PATH)."
            )
        # The model directory's own final evaluation (the trainer's), when it has one.
        evaluation = read_json(model_path / "eval_results.json", missing_ok=True) or {}
        own = [model_path] if (model_path / "metrics.json").is_file() or "eval_mean_iou" in evaluation else []
        measurements, notes, read = collect_measurements([*results, *own], class_names)
        run_config = read_json(model_path / "run_config.json", missing_ok=True)
        if run_config is None and "training_eval_miou" in measurements:
            training_dir = measurements["training_eval_miou"].source.parent
            run_config = read_json(training_dir / "run_config.json", missing_ok=True)
        trainer_state = read_json(model_path / "trainer_state.json", missing_ok=True)
    except ResultsError as error:
        raise HubSharingError(str(error)) from error
    data_args = (run_config or {}).get("DataArguments") or {}
    recorded = [(r.dataset, r.data_root) for r in read] + [(data_args.get("dataset"), data_args.get("data_root"))]
    dataset = describe_dataset(class_names, recorded + ([(card, None)] if card in known else []))
    for m in measurements.values():
        _check_same_model(m, model_path)
    return HubFolder(model_path, repo_id, config, template, dataset, measurements, notes, run_config, trainer_state)


def _copy_results(measurements: Mapping[str, Measurement], folder: Path) -> dict[str, str]:
    """Copies each results file (and its companions) under `folder/results/<group>/`, local paths shortened
    (`public_text`); sets `repo_path`. Returns `{plot title: repo path}` of the per-class plots."""
    targets: dict[Path, str] = {}  # results file -> its folder in the repo
    plots = {}
    for m in measurements.values():
        if m.source not in targets:
            base = "deeplab" if _SPECS[m.key]["stage"] == "stage2" else _SPECS[m.key]["stage"]
            group, n = base, 1
            while f"results/{group}" in targets.values():
                n += 1
                group = f"{base}_{n}"
            targets[m.source] = f"results/{group}"
            (folder / targets[m.source]).mkdir(parents=True)
            for file in (m.source, *m.results.companions):
                _copy_public(file, folder / targets[m.source] / file.name)
                if file.name == "per_class_iou.png":
                    plots[f"Per-class IoU: {group.replace('_', ' ')}"] = f"{targets[m.source]}/{file.name}"
        m.repo_path = f"{targets[m.source]}/{m.source.name}"
    return plots


def _results_json(plan: HubFolder, staging: Path, class_names: Sequence[str]) -> dict:
    """The folder's `results.json`: every measurement on the card, the file it was read from and that file's SHA-256
    (of the copy in `staging`), and the values not measured."""
    from . import __version__

    return {
        "generated_by": f"cpfcte_hf {__version__} (cpfcte_hf.hub)",
        "repo_id": plan.repo_id,
        "dataset": plan.dataset.name,
        "metric": "mean_iou over all classes, background included, one confusion matrix per split, 255 ignored",
        "class_names": list(class_names),
        "measurements": {
            key: {
                "description": _SPECS[m.key]["description"],
                "mean_iou": m.mean_iou,
                "mean_iou_percent": m.percent,
                "dataset": m.dataset,
                "split": m.split,
                "num_images": m.results.num_images,
                "source_file": m.repo_path,
                "source_sha256": _sha256(staging / m.repo_path),
            }
            for key, m in plan.measurements.items()
        },
        "not_measured": plan.not_measured,
    }


def build_hub_folder(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    plan: HubFolder | None = None,
) -> HubFolder:
    """
    Writes the Hub folder (see the module docstring) of the checkpoint `model_dir` to `out_dir` through a staging
    folder renamed into place, so it is never left half-written. `out_dir` must not exist, be empty, or (with
    `overwrite`) be a folder this function wrote. `card`, `results`: see `plan_hub_folder`, whose result for these
    arguments `plan` is, if already made.

    Raises:
        HubSharingError: a bad model directory, card, results source, repo id or output folder (message names it).
    """
    from .image_processing_cpfcte import CPFCTEImageProcessor
    from .modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not (overwrite and "generated_by" in (read_json(out / RESULTS_FILE, missing_ok=True) or {})):
            hint = (
                " (--overwrite only replaces a folder this command wrote)." if overwrite else " or pass --overwrite."
            )
            raise HubSharingError(f"--dry-run {out}: exists and is not empty. Choose a new folder{hint}")
    plan = plan or plan_hub_folder(model_dir, repo_id, card, results)
    model, info = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(plan.model_path, output_loading_info=True)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
        raise HubSharingError(f"--model {plan.model_path}: the weights do not match the config: {info}")
    processor = CPFCTEImageProcessor.from_pretrained(plan.model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        plots = _copy_results(plan.measurements, staging)
        for name, attribute in TRAINING_RECORDS.items():
            if getattr(plan, attribute):
                _write_public_json(getattr(plan, attribute), staging / name)
        render_model_card(plan, processor, model.num_parameters(), plots).save(staging / "README.md")
        record = _results_json(plan, staging, [model.config.id2label[i] for i in range(model.config.num_labels)])
        (staging / RESULTS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return dataclasses.replace(plan, path=out, files=files)


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


# ------------------------------------------------------------------------------------------------------ push


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> tuple[HubFolder, str]:
    """
    Builds the Hub folder of `model_dir` in a temporary directory, creates `repo_id` if needed and uploads the folder
    in one commit (results files of an earlier push that it no longer has are deleted). The inputs, then offline mode
    and the token (argument, `HF_TOKEN` or `hf auth login`'s), are checked before anything is built. `endpoint`:
    another Hub. Returns (what was built, the commit URL).

    Raises:
        HubSharingError: bad inputs (see `build_hub_folder`).
        HubPushError: offline, no token, or the Hub call failed (the message says which).
    """
    from huggingface_hub import HfApi, constants, get_token

    plan = plan_hub_folder(model_dir, repo_id, card, results)
    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "HF_HUB_OFFLINE is set: pushing needs the network. Unset HF_HUB_OFFLINE, or write the folder with "
            "--dry-run DIR and upload it later (`hf upload USER/NAME DIR`)."
        )
    api = HfApi(token=token or get_token(), endpoint=endpoint)
    if not api.token:
        raise HubPushError(
            "No Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens); or write the folder with --dry-run DIR."
        )
    with tempfile.TemporaryDirectory(prefix="cpfcte-hub-") as tmp:
        folder = build_hub_folder(model_dir, Path(tmp) / "repo", repo_id, plan=plan)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder.path,
                commit_message=commit_message or "Upload CPF-CTE checkpoint, model card and results (cpfcte_hf)",
                delete_patterns=["results/*"],
            )
        except Exception as error:  # noqa: BLE001 - network, auth and Hub errors alike end in one clear message
            where = f"{api.endpoint.rstrip('/')}/{repo_id}"
            raise HubPushError(f"Could not push to {where}: {type(error).__name__}: {error}") from error
    return folder, commit.commit_url


__all__ = [
    "CARD_TEMPLATE",
    "MEASUREMENTS",
    "NOT_MEASURED",
    "DatasetCard",
    "HubFolder",
    "HubPushError",
    "HubSharingError",
    "Measurement",
    "available_cards",
    "build_hub_folder",
    "describe_dataset",
    "format_hub_folder",
    "plan_hub_folder",
    "push_to_hub",
    "render_model_card",
]
