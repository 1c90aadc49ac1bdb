"""Tiny DeepLab-v2 builders shared by the `test_deeplab_*` tests: run in milliseconds on a CPU."""

import torch
from transformers import ResNetConfig

from cpfcte_hf.deeplab import DeepLabV2Config, DeepLabV2ForSemanticSegmentation, deeplab_image_processor


def tiny_resnet_config(layer_type: str = "bottleneck", **overrides) -> ResNetConfig:
    """Four one-block stages, 8 to 32 channels: a ResNet with the real layout that runs in milliseconds."""
    values = dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type=layer_type)
    values.update(overrides)
    return ResNetConfig(**values)


def tiny_deeplab_config(num_labels: int = 3, **overrides) -> DeepLabV2Config:
    """A DeepLab-v2 config on the tiny ResNet (small atrous rates for small crops); class 0 is background."""
    id2label = {0: "background", **{i: f"class_{i}" for i in range(1, num_labels)}}
    values = dict(backbone_config=tiny_resnet_config(), id2label=id2label, atrous_rates=[1, 2, 3, 4])
    values.update(overrides)
    return DeepLabV2Config(**values)


def save_tiny_deeplab(directory, num_labels: int = 3, image_size: int = 33, seed: int = 0, **overrides):
    """Saves a randomly initialised tiny DeepLab-v2 and its image processor; returns (model, processor)."""
    torch.manual_seed(seed)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config(num_labels, **overrides)).eval()
    processor = deeplab_image_processor(image_size)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor
