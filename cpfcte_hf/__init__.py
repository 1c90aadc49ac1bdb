# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE weakly supervised semantic segmentation for the Hugging Face ecosystem.

The package registers its models (CPF-CTE and DeepLab-v2) with transformers' Auto classes and its pipelines with
`pipeline(...)`, so that `AutoModelForSemanticSegmentation.from_pretrained(dir)` and
`pipeline("image-segmentation", model=dir)` work on its checkpoints without `trust_remote_code`.

Importing it is cheap: it imports neither torch, transformers nor datasets (so `cpfcte-hf --help` answers at once).
The registration happens as soon as transformers is there (`cpfcte_hf.models.register_with_transformers`): at
once when transformers was imported first, else when transformers is imported later (a one-shot import hook), and
whenever one of the names below is used (`cpfcte_hf.CPFCTEConfig`, `from cpfcte_hf import ...`).
"""

import importlib

# Idle OpenMP threads (torch's CPU ops) sleep instead of spinning, so that the CRF worker processes and other runs on
# the same cores get the CPU; the training commands choose a short spin instead (`utils/openmp.py`, README,
# Performance). OpenMP reads this once, when torch is loaded: it is set before torch is imported (no effect if torch
# was imported first), and an OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment wins.
from .utils.openmp import set_openmp_wait


set_openmp_wait(training=False)

from . import _compat  # noqa: E402
from .models import register_when_transformers_is_imported  # noqa: E402


__version__ = "0.1.0"

# The 0.1.0 module paths (`cpfcte_hf.pseudo_labeling`, `cpfcte_hf.trainer`, ...) keep importing for one release.
_compat.install()
register_when_transformers_is_imported()

# name -> the module that defines it (imported on first use)
_EXPORTS = {
    "VOC_CLASSES": "models.cpfcte.configuration_cpfcte",
    "CPFCTEConfig": "models.cpfcte.configuration_cpfcte",
    "vit_b16_384_config": "models.cpfcte.configuration_cpfcte",
    "CPFCTEImageProcessor": "models.cpfcte.image_processing_cpfcte",
    "class_probability_maps": "models.cpfcte.image_processing_cpfcte",
    "resize_and_normalize": "models.cpfcte.image_processing_cpfcte",
    "to_rgb_array": "models.cpfcte.image_processing_cpfcte",
    "ClassTokenFusion": "models.cpfcte.modeling_cpfcte",
    "ContextFusionBiLSTM": "models.cpfcte.modeling_cpfcte",
    "CPFCTEForWeaklySupervisedSegmentation": "models.cpfcte.modeling_cpfcte",
    "CPFCTEPreTrainedModel": "models.cpfcte.modeling_cpfcte",
    "CPFCTESegmentationOutput": "models.cpfcte.modeling_cpfcte",
    "PatchClassifier": "models.cpfcte.modeling_cpfcte",
    "TopKPooling": "models.cpfcte.modeling_cpfcte",
    "declare_no_video_processor": "models",
}

__all__ = sorted(name for name in _EXPORTS if name != "declare_no_video_processor")


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .models import register_with_transformers

    register_with_transformers()
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
