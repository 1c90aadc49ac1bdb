# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The models, one self-contained folder each, as transformers' `models/<name>/`: `cpfcte` (CPF-CTE) and
`deeplab_v2` (DeepLab-v2). Each folder's configuration, modeling and image-processing files are the remote code a
saved checkpoint carries; they import nothing else of this package.

This module registers both models with transformers' Auto classes and the package's pipelines with `pipeline(...)`
(`register_with_transformers`). It imports neither torch nor transformers itself: the registration runs once
transformers is there — when `cpfcte_hf` is imported after transformers, when transformers is imported after
`cpfcte_hf`, when a model file of this package has just been imported, or when a model name of `cpfcte_hf` is used.
"""

from __future__ import annotations

import importlib
import sys

from ..utils.import_hooks import call_after_import, is_initialising, remove_hook


# The model type of DeepLab-v2 (`configuration_deeplab.DeepLabV2Config.model_type`), stage 2's default architecture:
# here, where the option checks read it without transformers.
DEEPLAB_MODEL_TYPE = "deeplab_v2"
# The model type of CPF-CTE (`configuration_cpfcte.CPFCTEConfig.model_type`), read by the checks of a checkpoint.
CPFCTE_MODEL_TYPE = "cpfcte"


def check_model_type(model_type: str, known: list[str]) -> None:
    """Refuses a stage-2 `--model_type` that is not among the `known` architectures, listing them."""
    if model_type not in known:
        raise ValueError(
            f"--model_type {model_type!r} is not a semantic-segmentation architecture; choose one of {', '.join(known)}."
        )


# The registration imports both models' files and the pipelines (and, through them, other modules of this package).
# While any module of the package is still being executed (it imported transformers, which triggered the hook), it
# waits: the hook calls back when each module of the package finishes, and the last one registers.
_state = {"registered": False, "busy": False, "hook": None}


def declare_no_video_processor(config_class) -> None:
    """
    Registers that this package has no video processor for `config_class`.

    `pipeline("image-segmentation")` also tries to load a video processor, and transformers derives one from the image
    processor's `auto_map` entry (`CPFCTEImageProcessor` -> `CPFCTEVideoProcessor`). Finding no local class for that
    remote reference, it would ask "Do you wish to run the custom code? [y/N]" although the package is installed.
    A (empty) registration makes the installed package the local code for it: no prompt, and the video processor is
    simply absent. Without the package (remote code), `trust_remote_code=True` is asked for anyway.
    """
    # The class itself: `transformers.AutoVideoProcessor` is a placeholder that raises where torchvision is missing,
    # but the pipelines use this one (and its registry) either way.
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    AutoVideoProcessor.register(config_class, video_processor_classes={}, exist_ok=True)


def register_model(config_class, model_class, image_processor_class, remote_image_processor: bool) -> None:
    """
    Registers one model with the Auto classes (config, model, semantic-segmentation head, image processor) and for
    `save_pretrained` to write its remote code (`auto_map` and the source files), so that a checkpoint also loads
    with `trust_remote_code=True` where this package is not installed.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForSemanticSegmentation.register(config_class, model_class, exist_ok=True)
    AutoImageProcessor.register(config_class, image_processor_classes={"pil": image_processor_class}, exist_ok=True)
    declare_no_video_processor(config_class)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForSemanticSegmentation")
    if remote_image_processor:
        image_processor_class.register_for_auto_class("AutoImageProcessor")


def register_with_transformers() -> None:
    """Registers CPF-CTE and DeepLab-v2 with the Auto classes and the pipelines with `pipeline` (once)."""
    if _state["registered"] or _state["busy"]:
        return
    _state["busy"] = True
    try:
        from .cpfcte import register_cpfcte
        from .deeplab_v2 import register_deeplab_v2

        register_cpfcte()
        register_deeplab_v2()
        importlib.import_module("cpfcte_hf.models.cpfcte.pipelines")  # registers its task and classes on import
        _state["registered"] = True
    finally:
        _state["busy"] = False
    if _state["hook"] is not None:
        remove_hook(_state["hook"])
        _state["hook"] = None


def _after_import(name: str) -> None:
    """The hook's callback: registers once transformers and every module the registration imports are complete."""
    if _state["registered"] or _state["busy"] or "transformers" not in sys.modules:
        return
    # `name` has just been executed (its import is still marked as running); any other still running calls back
    running = [module for module in list(sys.modules) if module.startswith("cpfcte_hf.") or module == "transformers"]
    if any(is_initialising(module) for module in running if module != name):
        return
    register_with_transformers()


def register_when_transformers_is_imported() -> None:
    """Registers now if transformers is imported, else as soon as it (or a model file of this package) is."""
    if "transformers" in sys.modules and not is_initialising("transformers"):
        _after_import("transformers")
    elif _state["hook"] is None and not _state["registered"]:
        _state["hook"] = call_after_import(("transformers",), _after_import, prefixes=("cpfcte_hf.",))
