# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The model card of a Hub folder: `model_cards/template.md` rendered with huggingface_hub's `ModelCard.from_template`,
from the run's records only (`card_facts`: the dataset and classes, stage-1 training as run, each pseudo-labelling
run, each stage-2 model, the results tables). The paper's numbers and recipe appear only for VOC and COCO, labelled
as the paper's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ..models.cpfcte.configuration_cpfcte import VOC_CLASSES, CPFCTEConfig
from .card_rows import (
    crf_text,
    pseudo_label_rows,
    run_length,  # noqa: F401 - imported from here too (tests/test_hub_sharing.py)
    stage2_models,
    training_rows,
)
from .measurements import (
    _CARDS,
    _SPECS,
    NOT_MEASURED,
    TRAINING_RECORDS,
    HubSharingError,
    _cell,
    _table,
    per_class_table,
    results_table,
)
from .public import (
    public_text,
    public_value,
)


if TYPE_CHECKING:
    from .folder import HubFolder


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
    from ..data.coco import COCO_CLASSES

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
    from ..data.shapes import BACKGROUND, SHAPE_NAMES

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


def inference_size_text(config: CPFCTEConfig) -> str:
    """The pseudo-labelling pipeline's default size for this checkpoint, and where it comes from."""
    from ..models.cpfcte.inference import DEFAULT_INFERENCE_SIZE

    if config.inference_size:
        return f"{config.inference_size} (this checkpoint's `config.inference_size`)"
    return f"{DEFAULT_INFERENCE_SIZE} (the pipeline's default: this checkpoint records no `config.inference_size`)"


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
    `stage2_names` (the stage-2 architectures recorded, e.g. "DeepLab-v2" or "segformer"; "" when none),
    `train_split`, `training_records` (the files of `TRAINING_RECORDS` written). Local paths are shortened
    (`public_text`).
    """
    from ..models.cpfcte.crf import DenseCRFConfig
    from ..models.cpfcte.inference import DEFAULT_INFERENCE_SIZE

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
        "stage2_names": ", ".join(dict.fromkeys(model["name"] for model in stage2 if model["name"])),
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
