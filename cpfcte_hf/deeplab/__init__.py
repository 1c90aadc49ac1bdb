# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 (ResNet-101, output stride 8, ASPP): stage 2 of CPF-CTE, trained on the pseudo-labels.

Importing this package (which `import cpfcte_hf` does) registers the model with transformers' Auto classes, so that
`AutoModelForSemanticSegmentation.from_pretrained(dir)` and `pipeline("image-segmentation", model=dir)` load a
DeepLab-v2 checkpoint without `trust_remote_code`; `save_pretrained` writes the remote code for everyone else.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

from .. import declare_no_video_processor
from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
from ..models.deeplab_v2.configuration_deeplab import DeepLabV2Config, resnet101_config
from ..models.deeplab_v2.modeling_deeplab import (
    AtrousSpatialPyramidClassifier,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2PreTrainedModel,
    dilate_resnet,
)
from ..models.deeplab_v2.processing import DEEPLAB_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, deeplab_image_processor


def _register_auto_classes() -> None:
    AutoConfig.register(DeepLabV2Config.model_type, DeepLabV2Config, exist_ok=True)
    AutoModel.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(DeepLabV2Config, image_processor_classes={"pil": CPFCTEImageProcessor}, exist_ok=True)
    declare_no_video_processor(DeepLabV2Config)
    # `save_pretrained` then writes `auto_map` and copies the source files (see `DeepLabV2Config.to_dict` for the
    # image processor's entry).
    DeepLabV2Config.register_for_auto_class()
    DeepLabV2ForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")


_register_auto_classes()

__all__ = [
    "DEEPLAB_IMAGE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AtrousSpatialPyramidClassifier",
    "DeepLabV2Config",
    "DeepLabV2ForSemanticSegmentation",
    "DeepLabV2PreTrainedModel",
    "deeplab_image_processor",
    "dilate_resnet",
    "resnet101_config",
]
