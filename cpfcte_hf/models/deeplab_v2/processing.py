# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 input processing: the package's one image processor, with ImageNet statistics.

DeepLab's ResNet was trained on ImageNet-normalised RGB, so it reads images through `CPFCTEImageProcessor`
(`to_rgb_array` + `resize_and_normalize`) with ImageNet mean and std rather than ViT-PCM's 0.5/0.5.
"""

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..cpfcte.image_processing_cpfcte import CPFCTEImageProcessor


IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)
# DeepLab's evaluation size on VOC (8k + 1, larger than any VOC image side).
DEEPLAB_IMAGE_SIZE = 513


def deeplab_image_processor(size: int | tuple[int, int] = DEEPLAB_IMAGE_SIZE) -> CPFCTEImageProcessor:
    """
    The image processor saved with a DeepLab-v2 checkpoint (what `pipeline("image-segmentation")` uses): RGB,
    resized to `size` (an int for a square, or `(height, width)`), ImageNet mean/std. The pipeline's masks come back
    at each image's own size. Resizing to a square distorts the aspect ratio a little; `scripts/train_deeplab.py`
    evaluates at each image's native size (and scales of it) instead.
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"`size` must be positive, got {size!r}.")
    return CPFCTEImageProcessor(
        size={"height": height, "width": width}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
    )


__all__ = ["DEEPLAB_IMAGE_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "deeplab_image_processor"]
