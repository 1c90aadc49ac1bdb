# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 (ResNet-101, output stride 8, ASPP): configuration, modeling, its image processor and the
conversion of kazuto1011's COCO-initialised weights."""


def register_deeplab_v2() -> None:
    """Registers DeepLab-v2 with transformers' Auto classes, and for `save_pretrained` to write its remote code (the
    image processor's `auto_map` entry is written by `DeepLabV2Config.to_dict`)."""
    from .. import register_model
    from ..cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
    from .configuration_deeplab import DeepLabV2Config
    from .modeling_deeplab import DeepLabV2ForSemanticSegmentation

    register_model(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, CPFCTEImageProcessor, False)
