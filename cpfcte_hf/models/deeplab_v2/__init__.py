# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 (ResNet-101, output stride 8, ASPP): configuration, modeling, its image processor and the
conversion of kazuto1011's COCO-initialised weights."""


def register_deeplab_v2() -> None:
    """Registers DeepLab-v2 with transformers' Auto classes, and for `save_pretrained` to write its remote code."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    from .. import declare_no_video_processor
    from ..cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
    from .configuration_deeplab import DeepLabV2Config
    from .modeling_deeplab import DeepLabV2ForSemanticSegmentation

    AutoConfig.register(DeepLabV2Config.model_type, DeepLabV2Config, exist_ok=True)
    AutoModel.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(DeepLabV2Config, image_processor_classes={"pil": CPFCTEImageProcessor}, exist_ok=True)
    declare_no_video_processor(DeepLabV2Config)
    # `save_pretrained` then writes `auto_map` and copies the source files (see `DeepLabV2Config.to_dict` for the
    # image processor's entry).
    DeepLabV2Config.register_for_auto_class()
    DeepLabV2ForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
