# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The data-source options every command shares (`DataSourceArguments`): each command's own option dataclass
extends it, so that `--dataset`, `--data_root`, `--dataset_option` and `--cache_dir` are declared once and turned
into loader arguments in one place (`loader_options`). Light on purpose (no torch, transformers or datasets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils.arguments import loader_options
from ..utils.options import RepeatableList


@dataclass
class DataSourceArguments:
    """Where the images come from: the source, its root, and extra loader options."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset kind: voc, coco, shapes, hub, or tagged (your own photos: --data_root is the folder, with "
            "a tags.csv / tags.json / tags.jsonl; --dataset_option tags=FILE names another file)."
        },
    )
    data_root: str | None = field(
        default=None,
        metadata={
            "help": "Dataset root (VOCdevkit/VOC2012, coco2014, a photo folder), Hub id or parquet path.",
            "aliases": ["--root"],
        },
    )
    dataset_option: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra loader arguments KEY=VALUE ... (YAML values), repeatable; e.g. num_train=512.",
            "aliases": ["--dataset_options", "--dataset-options"],
            "action": RepeatableList,
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Arrow cache of the loaders."})

    def loader_options(self) -> dict:
        """`dataset_option` (a list of KEY=VALUE, or a mapping from a YAML preset) and `cache_dir` as loader kwargs."""
        return loader_options(self)
