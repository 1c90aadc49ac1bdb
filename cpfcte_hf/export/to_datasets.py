# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The masks as a `datasets.DatasetDict` (one split per labelled folder), its dataset card, and its Hub folder.

Columns: `image` and `label` (`datasets.Image`: the image's own bytes and the mask PNG's own bytes, so a row's
`label` decodes to the mask file pixel for pixel), `id` (string) and `classes` (`List(ClassLabel)`: the classes
present in the mask; the class names live in the features). Next to it: `id2label.json` (what the transformers
semantic-segmentation recipe reads) and `README.md`, a `huggingface_hub.DatasetCard` rendered from the labelling
run's records (`model_cards/dataset_card.md`).

`write_hub_folder` writes the folder a Hub dataset repo holds, in the layout `DatasetDict.push_to_hub` writes:
`data/<split>-00000-of-0000N.parquet` (shards of at most 500 MB), the card with its `configs` and `dataset_info`
metadata, `id2label.json`; `datasets.load_dataset(folder)` loads it. `push_folder` uploads it in one commit.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from ..hub.public import public_text
from .records import LEFT_OUT_REASONS, Selection


CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "dataset_card.md"
ID2LABEL_FILE = "id2label.json"
MAX_SHARD_BYTES = 500 << 20  # datasets' own default shard size for push_to_hub


def segmentation_features(class_names: Sequence[str]) -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Image(),
            "id": datasets.Value("string"),
            "classes": datasets.List(datasets.ClassLabel(names=[str(name) for name in class_names])),
        }
    )


def build_split(selection: Selection, work_dir: Path, progress=None) -> datasets.Dataset:
    """The exported images of one split as a `datasets.Dataset`, written row by row to an Arrow file in `work_dir`
    (memory stays flat whatever the split's size)."""
    from datasets.arrow_writer import ArrowWriter

    labelled = selection.labelled
    features = segmentation_features(labelled.class_names)
    path = work_dir / f"{labelled.split}.arrow"
    with ArrowWriter(features=features, path=str(path)) as writer:
        for item in selection.images:
            row = {
                "image": {"bytes": item.image_bytes(), "path": f"{item.id}{item.extension}"},
                "label": {"bytes": item.mask_path.read_bytes(), "path": f"{item.id}.png"},
                "id": item.id,
                "classes": item.classes,
            }
            writer.write(features.encode_example(row))
            if progress is not None:
                progress.update(1)
        writer.finalize()
    info = datasets.DatasetInfo(description=_description(selection), features=features)
    return datasets.Dataset.from_file(str(path), info=info, split=labelled.split)


def build_dataset_dict(selections: Sequence[Selection], work_dir: Path, progress=None) -> datasets.DatasetDict:
    return datasets.DatasetDict({s.labelled.split: build_split(s, work_dir, progress) for s in selections})


def _description(selection: Selection) -> str:
    labelled = selection.labelled
    stage = "stage-1 pseudo-labels" if labelled.stage == "pseudo_labels" else "stage-2 predictions"
    return (
        f"{labelled.mask_set} masks ({stage}, cpfcte_hf) of {labelled.dataset} {labelled.split}; label values are "
        f"class ids ({', '.join(labelled.class_names)}), 255 = ignore."
    )


# ----------------------------------------------------------------------------------------------------- the card


def _value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(item) for item in value)
    return public_text(str(value))


def _percent(value) -> str:
    return "not measured" if value is None else f"{100 * float(value):.2f} %"


def _stage_text(selection: Selection) -> str:
    labelled, summary = selection.labelled, selection.labelled.summary
    model = _value(summary.get("model"))
    if labelled.stage == "pseudo_labels":
        return (
            f"stage 1 (`cpfcte-hf label`): the CPF-CTE checkpoint `{model}` predicted class maps, restricted to each "
            "image's tags when label masking is on; BPM is their argmax, CRF the dense-CRF refinement of them. "
            f"This split has the {labelled.mask_set} masks."
        )
    return (
        f"stage 2: the segmentation model `{model}` (trained on stage-1 pseudo-labels) predicted each image at "
        f"several scales fused by their maximum (MS), then refined by the dense CRF (MS+CRF). This split has the "
        f"{labelled.mask_set} masks."
    )


def _settings_rows(selection: Selection) -> list[tuple[str, str]]:
    fingerprint = selection.labelled.fingerprint
    rows = [("model weights (sha256 of the tensors)", str(fingerprint.get("model_weights", ""))[:12])]
    for key in ("size", "scales", "flip", "use_image_labels", "crf_max_side", "align_corners"):
        if key in fingerprint:
            rows.append((key, _value(fingerprint[key])))
    rows.append(("dense CRF", _value(fingerprint.get("crf")) if fingerprint.get("crf") else "off"))
    return rows


def _numbers(selection: Selection) -> list[tuple[str, str]]:
    summary, metrics = selection.labelled.summary, selection.labelled.metrics
    rows = [
        ("images in the split", _value(summary.get("total"))),
        ("failed", _value(summary.get("failed"))),
        ("skipped by the loader", _value(summary.get("skipped_by_loader"))),
        ("seconds (last run)", _value(summary.get("seconds"))),
    ]
    if metrics:
        for name, entry in (metrics.get("predictions") or {}).items():
            scored = entry.get("num_scored")
            rows.append((f"{name} mIoU against the ground truth ({scored} images)", _percent(entry.get("mean_iou"))))
    else:
        rows.append(("mIoU against the ground truth", "not measured (no ground truth in the split)"))
    return rows


def render_dataset_card(
    selections: Sequence[Selection], repo_id: str | None = None, folder: str | None = None, hub_info=None
):
    """
    The dataset card (`huggingface_hub.DatasetCard`) of an export, every statement from the labelling runs' records
    and the export itself. `repo_id` / `folder`: what the usage example loads (`load_dataset(repo_id)` or
    `load_from_disk(folder)`). `hub_info`: the `datasets.DatasetInfo` (features, splits, sizes) of a Hub folder,
    written into the card's metadata with the `configs` of its parquet files.
    """
    from huggingface_hub import DatasetCard

    first = selections[0].labelled
    source = first.dataset or "images"
    data = _card_data(selections, source, hub_info)
    images_with = Counter(c for s in selections for item in s.images for c in item.classes)
    if repo_id or hub_info is not None:
        usage = f'from datasets import load_dataset\n\nds = load_dataset("{repo_id or public_text(str(folder))}")'
    else:
        usage = f'from datasets import load_from_disk\n\nds = load_from_disk("{public_text(str(folder or "."))}")'
    usage += f'\nmask = ds["{first.split}"][0]["label"]  # PIL palette image, pixel values = class ids'
    stage = "stage-1 pseudo-labels" if first.stage == "pseudo_labels" else "stage-2 predictions"
    return DatasetCard.from_template(
        data,
        template_path=str(CARD_TEMPLATE),
        pretty_name=data.pretty_name,
        made_by=f"{stage} of {source}",
        ignore_note=True,
        class_rows=[
            {"id": i, "name": name, "images": images_with.get(i, 0)} for i, name in enumerate(first.class_names)
        ],
        splits=[_split_entry(selection) for selection in selections],
        usage=usage,
    )


def _card_data(selections: Sequence[Selection], source: str, hub_info):
    """The card's metadata; with `hub_info`, the `configs` of the Hub folder's parquet files and its features."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        pretty_name=f"{source} pseudo-label masks (CPF-CTE)",
        task_categories=["image-segmentation"],
        task_ids=["semantic-segmentation"],
        annotations_creators=["machine-generated"],
        size_categories=[_size_category(sum(len(s.images) for s in selections))],
        tags=["weakly-supervised-semantic-segmentation", "pseudo-labels", "cpfcte-hf"],
    )
    if hub_info is not None:
        configs = {"default": {"data_files": [{"split": s.labelled.split, "path": f"data/{s.labelled.split}-*"}
                                              for s in selections]}}  # fmt: skip
        MetadataConfigs(configs).to_dataset_card_data(data)
        DatasetInfosDict({"default": hub_info}).to_dataset_card_data(data)
    return data


def _split_entry(selection: Selection) -> dict:
    """What the card's template says of one split."""
    labelled = selection.labelled
    left_out = [f"{count} {LEFT_OUT_REASONS[reason]}" for reason, count in selection.counts.items()]
    return {
        "name": labelled.split,
        "exported": len(selection.images),
        "source": f"{labelled.dataset} / {labelled.split}",
        "mask_set": labelled.mask_set,
        "left_out_total": len(selection.left_out),
        "left_out": left_out,
        "stage_text": _stage_text(selection),
        "settings": _settings_rows(selection),
        "numbers": _numbers(selection),
        "scores": bool(labelled.metrics),
    }


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return name
    return "n>1M"


def write_id2label(folder: Path, class_names: Sequence[str]) -> None:
    id2label = {str(i): str(name) for i, name in enumerate(class_names)}
    (folder / ID2LABEL_FILE).write_text(json.dumps(id2label, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------- save_to_disk, Hub


def write_saved_dataset(
    dataset: datasets.DatasetDict, selections: Sequence[Selection], folder: Path, shown_as: Path
) -> None:
    """`dataset.save_to_disk(folder)`, its card and `id2label.json`. `folder` is a staging folder that becomes
    `shown_as` (the path the card's example loads)."""
    dataset.save_to_disk(str(folder))
    render_dataset_card(selections, folder=str(shown_as)).save(folder / "README.md")
    write_id2label(folder, selections[0].labelled.class_names)


def write_hub_folder(
    dataset: datasets.DatasetDict,
    selections: Sequence[Selection],
    folder: Path,
    repo_id: str | None,
    shown_as: Path | None = None,
) -> list[str]:
    """Writes the Hub dataset repo's files into `folder` (see the module docstring); returns their paths. The card's
    example loads `repo_id`, else the folder `shown_as` (what `folder`, a staging folder, becomes)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    splits, download_size, dataset_size = {}, 0, 0
    for name, split in dataset.items():
        nbytes = split._estimate_nbytes()
        num_shards = max(1, int(nbytes / MAX_SHARD_BYTES) + 1) if len(split) else 1
        for index in range(num_shards):
            path = folder / "data" / f"{name}-{index:05d}-of-{num_shards:05d}.parquet"
            split.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(path))
            download_size += path.stat().st_size
        splits[name] = {"name": name, "num_bytes": nbytes, "num_examples": len(split)}
        dataset_size += nbytes
    first = next(iter(dataset.values()))
    info = datasets.DatasetInfo(
        features=first.features,
        splits=datasets.SplitDict.from_split_dict(list(splits.values())),
        download_size=download_size,
        dataset_size=dataset_size,
    )
    render_dataset_card(selections, repo_id=repo_id, folder=str(shown_as or folder), hub_info=info).save(
        folder / "README.md"
    )
    write_id2label(folder, selections[0].labelled.class_names)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push_folder(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """
    Uploads a Hub folder (`write_hub_folder`) to the dataset repo `repo_id` in one commit (created if needed; data
    files of an earlier push that this one does not have are deleted). Returns the commit URL.

    Raises:
        HubPushError: offline mode, no token, or the Hub call failed (one line saying which).
    """
    from huggingface_hub import HfApi, constants, get_token

    from ..hub.measurements import HubPushError

    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "HF_HUB_OFFLINE is set: pushing needs the network. Unset it, or write the folder with --dry_run DIR and "
            "upload it later (`hf upload --repo-type dataset USER/NAME DIR`)."
        )
    api = HfApi(token=token or get_token())
    if not api.token:
        raise HubPushError(
            "No Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access; or "
            "write the folder with --dry_run DIR."
        )
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message="Upload masks, dataset card and id2label.json (cpfcte-hf export)",
            delete_patterns=["data/*"],
        )
    except Exception as error:  # noqa: BLE001 - network, auth and Hub errors alike end in one clear message
        raise HubPushError(
            f"Could not push to {api.endpoint.rstrip('/')}/datasets/{repo_id}: {type(error).__name__}: {error}"
        ) from error
    return commit.commit_url


__all__ = [
    "ID2LABEL_FILE",
    "build_dataset_dict",
    "push_folder",
    "render_dataset_card",
    "segmentation_features",
    "write_hub_folder",
    "write_saved_dataset",
]
