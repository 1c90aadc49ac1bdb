# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The inputs of a stage-2 start that need no library to check: the data splits it loads, the pseudo-labels it trains
on and where its model comes from (`check_stage2_inputs`). `train-deeplab` / `train-segmenter` run them on the options
the front door builds, before transformers is imported; `cpfcte-hf run` runs them on each of its stage-2 steps; the
start itself runs them again with the architecture checks that need transformers (`stage2.train.check_deeplab_inputs`).
Importing this module imports neither torch, transformers nor datasets.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from ..data import check_dataset
from ..models import DEEPLAB_MODEL_TYPE, check_model_type
from ..prediction.job_dir import MASK_SETS
from ..utils.arguments import check_model_option
from ..utils.options import stored_fact


def splits_to_load(data_args, model_args, do_train: bool, train_dataset=None, eval_dataset=None) -> tuple[bool, bool]:
    """(load the training split, load the evaluation split): the training split gives the classes when there is
    no checkpoint to take them from."""
    need_train_split = do_train or not model_args.model_name_or_path
    return train_dataset is None and need_train_split, eval_dataset is None and bool(data_args.eval_split)


def resolve_pseudo_label_dir(path: str | os.PathLike, pseudo_label_set: str = "crf") -> Path:
    """
    The folder of `<id>.png` masks to train on: `path/<pseudo_label_set>` when `path` is an output directory of
    `cpfcte-hf label` (it has `crf/` and `bpm/`), else `path` itself.

    Raises:
        NotADirectoryError / FileNotFoundError naming the path when there is no such folder or no PNG in it.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"Pseudo-label directory {str(root)!r} does not exist or is not a directory.")
    if pseudo_label_set not in MASK_SETS:
        raise ValueError(f"`pseudo_label_set` must be 'crf' or 'bpm', got {pseudo_label_set!r}.")
    if any((root / name).is_dir() for name in MASK_SETS):
        folder = root / pseudo_label_set
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{str(root)!r} is a pseudo-label output directory without {pseudo_label_set}/ "
                f"(was `cpfcte-hf label` run{' with --no_crf' if pseudo_label_set == 'crf' else ''}?)."
            )
        root = folder
    if not any(root.glob("*.png")):
        raise FileNotFoundError(f"No <id>.png masks in {str(root)!r}.")
    return root


def check_stage2_inputs(
    data_args,
    model_args,
    do_train: bool,
    *,
    load_train: bool | None = None,
    load_eval: bool | None = None,
    made_earlier: Collection[str] = (),
) -> None:
    """
    The first problem of a stage-2 start, in one line naming the option or path: the architecture (`--model_type`,
    against the stored table of the installed transformers' architectures; without one, the start checks it), the
    data (`check_dataset` of the splits to load), what there is to do, the pseudo-labels, and the model's location
    (`--model_name_or_path`, else a DeepLab-v2 `--init_checkpoint`, else its `--backbone`). Paths in `made_earlier`
    are made by an earlier step of a run (`cpfcte-hf run`) and not checked.
    """
    known = stored_fact("segmenter_model_types")
    if model_args.model_type and known:
        check_model_type(model_args.model_type, known)
    if load_train is None or load_eval is None:  # no datasets handed over: the splits are loaded
        load_train, load_eval = splits_to_load(data_args, model_args, do_train)
    splits = [
        split for split, load in ((data_args.train_split, load_train), (data_args.eval_split, load_eval)) if load
    ]
    if splits and not data_args.dataset:
        raise ValueError("--dataset is required (voc, coco, shapes, ...).")
    for split in splits:
        check_dataset(data_args.dataset, data_args.data_root, split, **data_args.loader_options())
    if not do_train and not data_args.eval_split:
        raise ValueError("Nothing to do: no training (--do_train false) and no --eval_split.")
    if not do_train and not (model_args.model_name_or_path or model_args.init_checkpoint):
        raise ValueError(
            "--do_train false evaluates a trained model: give it with --model_name_or_path (or --init_checkpoint); "
            "without one the evaluation would score an untrained head."
        )
    if do_train and not data_args.pseudo_labels:
        raise ValueError("--pseudo_labels is required for training (the output directory of `cpfcte-hf label`).")
    if do_train and str(data_args.pseudo_labels) not in made_earlier:
        resolve_pseudo_label_dir(data_args.pseudo_labels, data_args.pseudo_label_set)
    check_model_location(model_args, made_earlier)


def check_model_location(model_args, made_earlier: Collection[str] = ()) -> None:
    """The model source the start will use exists: a checkpoint (a folder or a Hub id), else for DeepLab-v2 a
    converted .pth, else its ImageNet backbone (none: random initialisation)."""
    if model_args.model_name_or_path:
        if str(model_args.model_name_or_path) not in made_earlier:
            check_model_option("model_name_or_path", model_args.model_name_or_path)
    elif model_args.model_type and model_args.model_type != DEEPLAB_MODEL_TYPE:
        return  # another architecture without a checkpoint: built from its config
    elif model_args.init_checkpoint:
        if not os.path.isfile(model_args.init_checkpoint):
            raise FileNotFoundError(f"--init_checkpoint {model_args.init_checkpoint}: no such file.")
    else:
        check_model_option("backbone", model_args.backbone)


def early_check(data_args, model_args, test_args, crf_args, training) -> None:
    """`train-deeplab`'s check on the front door's options (`training`: Trainer's, a namespace of their values)."""
    check_stage2_inputs(data_args, model_args, training.do_train)


__all__ = ["check_model_location", "check_stage2_inputs", "early_check", "resolve_pseudo_label_dir", "splits_to_load"]
