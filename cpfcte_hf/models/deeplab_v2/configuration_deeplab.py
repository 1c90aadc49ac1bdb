# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""DeepLab-v2 configuration (stage 2 of CPF-CTE: a segmentation network trained on the pseudo-labels).

This file is copied next to the weights by `save_pretrained` (remote code), so it imports only `transformers`
and nothing else from this package.
"""

from transformers import PreTrainedConfig, ResNetConfig


# The PASCAL VOC classes, background first. A copy of `cpfcte_hf.models.cpfcte.configuration_cpfcte.VOC_CLASSES`: remote code
# cannot import outside its own folder. `tests/test_deeplab_modeling.py` checks that the two stay identical.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# `auto_map` entries that `save_pretrained` cannot write itself (a class registers for one Auto class only). The
# image processor is the package's one image processor (`CPFCTEImageProcessor`, with ImageNet statistics); its file
# is copied next to the weights by the processor's own `save_pretrained`.
EXTRA_AUTO_MAP = {
    "AutoModel": "modeling_deeplab.DeepLabV2ForSemanticSegmentation",
    "AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor",
}


def resnet101_config(**kwargs) -> ResNetConfig:
    """The ResNet-101 backbone of DeepLab-v2 (`microsoft/resnet-101` shapes: bottleneck blocks, depths 3-4-23-3)."""
    defaults = dict(
        embedding_size=64,
        hidden_sizes=[256, 512, 1024, 2048],
        depths=[3, 4, 23, 3],
        layer_type="bottleneck",
        hidden_act="relu",
        downsample_in_first_stage=False,
    )
    defaults.update(kwargs)
    return ResNetConfig(**defaults)


class DeepLabV2Config(PreTrainedConfig):
    r"""
    Configuration of a [`DeepLabV2ForSemanticSegmentation`] model: a dilated ResNet (output stride 8 by default) and
    the ASPP classifier of DeepLab-v2 (parallel 3x3 atrous convolutions straight to the class scores, summed).
    Defaults give DeepLab-v2 ResNet-101 for the 21 PASCAL VOC classes, as used by WSSS papers for their stage 2.

    Args:
        backbone_config (`ResNetConfig` or `dict`, *optional*):
            Configuration of the ResNet backbone, in transformers' `ResNetConfig` format so that ImageNet checkpoints
            such as `microsoft/resnet-101` load onto it one to one. Defaults to ResNet-101 (`resnet101_config()`).
        id2label (`dict[int, str]`, *optional*):
            Class names, background first (class 0). Defaults to the 21 PASCAL VOC classes.
            `num_labels` (C) is `len(id2label)`.
        atrous_rates (`list[int]`, *optional*, defaults to `[6, 12, 18, 24]`):
            Dilation rates of the ASPP branches (DeepLab-v2 "ASPP-L"). Each branch is a 3x3 convolution from the
            backbone features to the C class scores; the branches' outputs are summed.
        output_stride (`int`, *optional*, defaults to 8):
            Ratio of input size to logits size. The backbone stages that would reduce the resolution past this
            stride keep it and dilate their 3x3 convolutions instead (8: dilation 2 and 4 in the last two stages of
            a ResNet; 16: dilation 2 in the last stage; 32: a plain ResNet). One of 8, 16, 32.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value ignored by the cross-entropy loss (unlabelled or uncertain pixels).
        freeze_batch_norm (`bool`, *optional*, defaults to `True`):
            Keep the backbone's BatchNorm layers fixed while training (running statistics used, affine parameters
            not trained), as DeepLab-v2 does: batches of 10 crops are too small for batch statistics.
        align_corners (`bool`, *optional*, defaults to `True`):
            Geometry of every bilinear resize of logits (loss, post-processing, multi-scale fusion). DeepLab's crop
            sizes are `8k + 1` (321, 513), so that with `align_corners=True` the logits' corners sit on the image's.
        classifier_init_std (`float`, *optional*, defaults to 0.01):
            Standard deviation of the normal initialisation of the ASPP convolutions (biases start at zero), as in
            DeepLab-v2.

    Example:

    ```python
    >>> from cpfcte_hf.deeplab import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
    >>> config = DeepLabV2Config()  # ResNet-101, output stride 8, VOC classes
    >>> model = DeepLabV2ForSemanticSegmentation(config)
    ```
    """

    model_type = "deeplab_v2"
    sub_configs_defaults = {"backbone_config": ResNetConfig}

    backbone_config: dict | PreTrainedConfig | None = None
    atrous_rates: list[int] | tuple[int, ...] = (6, 12, 18, 24)
    output_stride: int = 8
    semantic_loss_ignore_index: int = 255
    freeze_batch_norm: bool = True
    align_corners: bool = True
    classifier_init_std: float = 0.01

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = resnet101_config()
        elif isinstance(self.backbone_config, dict):
            values = {k: v for k, v in self.backbone_config.items() if k != "model_type"}
            self.backbone_config = ResNetConfig(**values)
        elif not isinstance(self.backbone_config, ResNetConfig):
            raise TypeError(
                f"`backbone_config` must be a ResNetConfig or a dict of its fields, got "
                f"{type(self.backbone_config).__name__}."
            )
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(VOC_CLASSES))
        self.atrous_rates = [int(rate) for rate in self.atrous_rates]
        super().__post_init__(**kwargs)
        if self.id2label.get(0) == "LABEL_0":  # generated from `num_labels`: class 0 is background everywhere
            self.id2label[0] = "background"
        if self.label2id is None or set(self.label2id) != set(self.id2label.values()):
            self.label2id = {name: i for i, name in self.id2label.items()}
        self._validate_deeplab_fields()

    def _validate_deeplab_fields(self):
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"`output_stride` must be 8, 16 or 32, got {self.output_stride}.")
        if len(self.backbone_config.depths) != 4:
            raise ValueError(
                "DeepLab-v2 needs a 4-stage ResNet backbone; `backbone_config.depths` is "
                f"{self.backbone_config.depths}."
            )
        if not self.atrous_rates or any(rate < 1 for rate in self.atrous_rates):
            raise ValueError(f"`atrous_rates` must be a non-empty list of positive ints, got {self.atrous_rates}.")
        if self.num_labels < 2:
            raise ValueError(f"DeepLab-v2 needs background plus at least one class; got num_labels={self.num_labels}.")
        if 0 <= self.semantic_loss_ignore_index < self.num_labels:
            raise ValueError(
                f"`semantic_loss_ignore_index` ({self.semantic_loss_ignore_index}) is a class id (num_labels="
                f"{self.num_labels}); use a value outside 0..{self.num_labels - 1}, e.g. 255."
            )

    def to_dict(self):
        output = super().to_dict()
        # As `CPFCTEConfig.to_dict`: the image processor is named here as well as in preprocessor_config.json.
        auto_map = output.get("auto_map")
        if auto_map and "AutoModelForSemanticSegmentation" in auto_map:
            output["auto_map"] = {**EXTRA_AUTO_MAP, **auto_map}
        return output

    @property
    def backbone_hidden_size(self) -> int:
        """Channels of the backbone's last stage, the ASPP's input (2048 for ResNet-101)."""
        return self.backbone_config.hidden_sizes[-1]


__all__ = ["DeepLabV2Config", "VOC_CLASSES", "resnet101_config"]
