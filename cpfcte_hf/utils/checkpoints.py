# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Where a model comes from: a local checkpoint folder (checked to hold a config and weights) or a Hub id (resolved
through huggingface_hub, offline-aware), its config, and the model loaded for inference.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .arguments import parse_key_values  # noqa: F401  (re-exported: scripts and stage 2 import it from here)


if TYPE_CHECKING:  # torch only where a model is loaded: the command line checks a model's location without it
    import torch


logger = logging.getLogger(__name__)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_checkpoint_dir(directory: str | os.PathLike) -> None:
    """
    Checks that a local directory is a saved checkpoint: `config.json` and weights.

    Raises:
        FileNotFoundError: the message names the directory and what is missing.
    """
    name = os.fspath(directory)
    if not os.path.isfile(os.path.join(name, "config.json")):
        raise FileNotFoundError(f"Model directory {name!r} has no config.json: not a saved checkpoint.")
    if not any(os.path.isfile(os.path.join(name, f)) for f in WEIGHT_FILES):
        raise FileNotFoundError(
            f"Model directory {name!r} has no weights in it (looked for {', '.join(WEIGHT_FILES)}). "
            "Point --model at a directory written by `save_pretrained` / the trainer's best checkpoint."
        )


def looks_like_local_path(name: str) -> bool:
    """True for names that can only mean a directory: `./x`, `../x`, `/x`, `~/x`, `C:\\x`, `a/b/c` (a Hub id has at
    most one `/`), or any backslash."""
    return (
        name.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")
    )


def resolve_model_location(name: str, timeout: float = 10.0) -> dict:
    """
    Decides, quickly, whether `--model name` is a local checkpoint directory or a Hub model, and fails with "not
    found" before transformers' download retries (about 27 s without a network) when it is neither.

    Order: an existing directory is checked (`config.json`, weights); an existing file, or a name that looks like
    a path (`looks_like_local_path`) but does not exist, is an error; a name that is not a valid Hub id is "not
    found"; otherwise one request asks the Hub whether the model exists (none in offline mode, `HF_HUB_OFFLINE=1`).
    When the Hub cannot be reached, a model already in the local Hub cache is used from there.

    Returns:
        Extra keyword arguments for `from_pretrained` (`{"local_files_only": True}` for a cached model without a
        network, else `{}`).

    Raises:
        FileNotFoundError: not found as above, or the Hub cannot be reached and the model is not cached;
        NotADirectoryError: `name` is a file.
    """
    if os.path.isdir(name):
        check_checkpoint_dir(name)
        return {}
    if os.path.exists(name):
        raise NotADirectoryError(f"--model {name!r} is a file; give a checkpoint directory or a Hub id.")
    if looks_like_local_path(name):
        raise FileNotFoundError(f"Model directory {name!r} not found (resolved to {os.path.abspath(name)!r}).")

    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(f"Model {name!r} not found: no such directory, and not a valid Hub id.") from None
    if constants.HF_HUB_OFFLINE:
        return {}  # transformers looks in the cache only, and fails at once if the model is not there
    try:
        HfApi().model_info(name, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - no network, proxy, timeout: the cache may still have it
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, RepositoryNotFoundError) or status in (401, 404):
            raise FileNotFoundError(
                f"Model {name!r} not found: no directory of that name here (in {os.getcwd()!r}), and no Hub model "
                "of that name (or a private one: log in with `hf auth login`)."
            ) from None
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            logger.warning(f"The Hub cannot be reached ({type(error).__name__}); using the cached copy of {name!r}.")
            return {"local_files_only": True}
        raise FileNotFoundError(
            f"Model {name!r} not found: no directory of that name here (in {os.getcwd()!r}), and the Hub cannot be "
            f"reached to look it up ({type(error).__name__}: {error}). Check the path, or the network "
            "(HF_ENDPOINT, proxy)."
        ) from None
    return {}


def load_model_config(model_name_or_path: str | os.PathLike):
    """
    The checkpoint's config alone (`config.json`: classes, patch size, inference size), without its weights, and
    the keyword arguments `from_pretrained` needs for it (`resolve_model_location`): enough to check a dataset or
    a tags file against the model's classes before spending seconds on loading the weights.

    Raises:
        FileNotFoundError, NotADirectoryError: see `resolve_model_location`.
    """
    from transformers import AutoConfig

    name = os.path.expanduser(os.fspath(model_name_or_path))
    hub_kwargs = resolve_model_location(name)
    try:
        return AutoConfig.from_pretrained(name, **hub_kwargs), hub_kwargs
    except OSError as error:
        raise OSError(f"Could not read the model's config from {name!r}: {error}") from error


def load_model(
    model_name_or_path: str | os.PathLike, device: str | torch.device | None = None, config=None, **hub_kwargs
):
    """
    Loads a CPF-CTE checkpoint (a local directory or a Hub id) and its image processor, in eval mode.
    `resolve_model_location` decides which, before any download. `config`: the checkpoint's config if already
    read (`load_model_config`; then `hub_kwargs` should be the ones it returned).

    Raises:
        FileNotFoundError: a local directory that does not exist, or lacks `config.json` or weights (the message
            names the directory and the files looked for); a name that is no directory and no Hub model.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor

    name = os.path.expanduser(os.fspath(model_name_or_path))
    if config is None:
        config, located = load_model_config(name)
        hub_kwargs = {**located, **hub_kwargs}
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(name, config=config, **hub_kwargs)
    except OSError as error:
        raise OSError(f"Could not load a model from {name!r}: {error}") from error
    try:
        processor = AutoImageProcessor.from_pretrained(name, **hub_kwargs)
    except (OSError, ValueError) as error:
        logger.warning(f"No image processor in {name!r} ({error}); using CPFCTEImageProcessor defaults.")
        processor = CPFCTEImageProcessor()
    if device is not None:
        model = model.to(device)
    return model.eval(), processor
