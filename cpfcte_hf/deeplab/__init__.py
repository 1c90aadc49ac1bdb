# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 (ResNet-101, output stride 8, ASPP): stage 2 of CPF-CTE, trained on the pseudo-labels.

Importing this package registers the model with transformers' Auto classes, so that
`AutoModelForSemanticSegmentation.from_pretrained(dir)` and `pipeline("image-segmentation", model=dir)` load a
DeepLab-v2 checkpoint without `trust_remote_code`; `save_pretrained` writes the remote code for everyone else.
"""

from ..models import declare_no_video_processor, register_with_transformers  # noqa: F401  (0.1.0 names)
from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor  # noqa: F401  (DeepLab's processor class)
from ..models.deeplab_v2.configuration_deeplab import DeepLabV2Config, resnet101_config
from ..models.deeplab_v2.modeling_deeplab import (
    AtrousSpatialPyramidClassifier,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2PreTrainedModel,
    dilate_resnet,
)
from ..models.deeplab_v2.processing import DEEPLAB_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, deeplab_image_processor


register_with_transformers()

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
