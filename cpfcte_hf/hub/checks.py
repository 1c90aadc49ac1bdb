# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The inputs of a Hub folder that need no library to check: the checkpoint directory (`check_model_dir`) and the repo
id (`check_repo_id`). `cpfcte-hf push` runs them before transformers is imported; `plan_hub_folder` runs them again.
Importing this module imports neither torch, transformers nor datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..evaluation.results import read_json
from ..models import CPFCTE_MODEL_TYPE
from .measurements import HubSharingError


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The checkpoint directory, after checking it holds a CPF-CTE config, weights and an image processor config."""
    from ..utils.checkpoints import check_checkpoint_dir

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
    if model_type != CPFCTE_MODEL_TYPE:
        raise HubSharingError(
            f"--model {path}: config.json has model_type {model_type!r}, not {CPFCTE_MODEL_TYPE!r}; "
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


def early_check(args) -> None:
    """`push`'s check on the front door's options: the checkpoint, then the repo id (each when given)."""
    if args.model:
        check_model_dir(args.model)
    if args.repo_id:
        check_repo_id(args.repo_id)


__all__ = ["check_model_dir", "check_repo_id", "early_check"]
