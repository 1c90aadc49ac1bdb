# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE weakly supervised semantic segmentation for the Hugging Face ecosystem.

Importing the package registers the model with transformers' Auto classes, so that
`AutoModelForSemanticSegmentation.from_pretrained(dir)` and `pipeline("image-segmentation", model=dir)` work on
a CPF-CTE checkpoint without `trust_remote_code`.
"""

import os


# Idle OpenMP threads (torch's CPU ops) sleep instead of spinning, so that the CRF worker processes and other runs on
# the same cores get the CPU: two `label` runs side by side on 2 cores were 2.8x slower than one after the other with
# spinning (README, Performance). OpenMP reads this once, when torch is loaded: it is set before torch is imported
# (no effect if torch was imported first), and OMP_WAIT_POLICY=ACTIVE in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import _compat  # noqa: E402


# The module paths of 0.1.0 (`cpfcte_hf.pseudo_labeling`, `cpfcte_hf.trainer`, ...) keep importing for one release.
_compat.install()

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation  # noqa: E402

# The class itself: `transformers.AutoVideoProcessor` is a placeholder that raises where torchvision is missing, but
# the pipelines use this one (and its registry) either way.
from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # noqa: E402

from .models.cpfcte.configuration_cpfcte import VOC_CLASSES, CPFCTEConfig, vit_b16_384_config  # noqa: E402
from .models.cpfcte.image_processing_cpfcte import (  # noqa: E402
    CPFCTEImageProcessor,
    class_probability_maps,
    resize_and_normalize,
    to_rgb_array,
)
from .models.cpfcte.modeling_cpfcte import (  # noqa: E402
    ClassTokenFusion,
    ContextFusionBiLSTM,
    CPFCTEForWeaklySupervisedSegmentation,
    CPFCTEPreTrainedModel,
    CPFCTESegmentationOutput,
    PatchClassifier,
    TopKPooling,
)


__version__ = "0.1.0"


def _register_auto_classes() -> None:
    AutoConfig.register(CPFCTEConfig.model_type, CPFCTEConfig, exist_ok=True)
    AutoModel.register(CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, exist_ok=True)
    AutoImageProcessor.register(CPFCTEConfig, image_processor_classes={"pil": CPFCTEImageProcessor}, exist_ok=True)
    declare_no_video_processor(CPFCTEConfig)
    # `save_pretrained` then writes `auto_map` and copies the source files, so that a checkpoint loads with
    # `trust_remote_code=True` where this package is not installed.
    CPFCTEConfig.register_for_auto_class()
    CPFCTEForWeaklySupervisedSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    CPFCTEImageProcessor.register_for_auto_class("AutoImageProcessor")


def declare_no_video_processor(config_class) -> None:
    """
    Registers that this package has no video processor for `config_class`.

    `pipeline("image-segmentation")` also tries to load a video processor, and transformers derives one from the image
    processor's `auto_map` entry (`CPFCTEImageProcessor` -> `CPFCTEVideoProcessor`). Finding no local class for that
    remote reference, it would ask "Do you wish to run the custom code? [y/N]" although the package is installed.
    A (empty) registration makes the installed package the local code for it: no prompt, and the video processor is
    simply absent. Without the package (remote code), `trust_remote_code=True` is asked for anyway.
    """
    AutoVideoProcessor.register(config_class, video_processor_classes={}, exist_ok=True)


_register_auto_classes()

# Imported for their registrations: DeepLab-v2 with the Auto classes, and the
# "weakly-supervised-pseudo-labelling" pipeline task.
from . import deeplab  # noqa: E402, F401
from .inference import pipelines  # noqa: E402, F401


__all__ = [
    "VOC_CLASSES",
    "CPFCTEConfig",
    "CPFCTEForWeaklySupervisedSegmentation",
    "CPFCTEImageProcessor",
    "CPFCTEPreTrainedModel",
    "CPFCTESegmentationOutput",
    "ClassTokenFusion",
    "ContextFusionBiLSTM",
    "PatchClassifier",
    "TopKPooling",
    "class_probability_maps",
    "resize_and_normalize",
    "to_rgb_array",
    "vit_b16_384_config",
]
