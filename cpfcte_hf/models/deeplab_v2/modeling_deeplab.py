# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""PyTorch DeepLab-v2 (Chen et al., 2017) on transformers' ResNet: stage 2 of CPF-CTE.

    pixel_values (B, 3, H, W)
      -> ResNetModel, the stages past `output_stride` dilated       features (B, 2048, H/8, W/8)
      -> AtrousSpatialPyramidClassifier (ASPP-L, rates 6/12/18/24)  logits (B, C, H/8, W/8)
      -> bilinear upsampling to the labels' size, cross-entropy ignoring 255

The backbone is transformers' own `ResNetModel` with the strides of its last stages turned into dilations, so a
transformers ResNet checkpoint (e.g. `microsoft/resnet-101`) loads onto it key for key.

This file is copied next to the weights by `save_pretrained` (remote code): it imports only torch, transformers
and, relatively, `configuration_deeplab`.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, ResNetConfig, ResNetModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SemanticSegmenterOutput

from .configuration_deeplab import DeepLabV2Config


def dilate_resnet(resnet: ResNetModel, output_stride: int) -> list[int]:
    """
    Turns the strides of a transformers `ResNetModel`'s later stages into dilations, in place, so that its features
    have `output_stride` (8, 16 or 32) instead of 32. Only stride, dilation and padding of existing convolutions
    change:
    the parameters and their names are untouched, so the model still loads any ResNet checkpoint of its config.

    Every 3x3 convolution of a dilated stage gets that stage's dilation (DeepLab-v2: 2 in the third stage and 4 in
    the fourth for output stride 8), with padding `dilation` so that it keeps the spatial size.

    Returns the dilation of each stage, e.g. `[1, 1, 2, 4]`.
    """
    config = resnet.config
    stride = 4 * (2 if config.downsample_in_first_stage else 1)  # the stem: 7x7 conv and max pool, stride 2 each
    dilation = 1
    dilations = []
    for index, stage in enumerate(resnet.encoder.stages):
        downsamples = index > 0 or config.downsample_in_first_stage
        if downsamples and stride * 2 > output_stride:
            dilation *= 2
            for module in stage.modules():
                if isinstance(module, nn.Conv2d):
                    module.stride = (1, 1)
                    if module.kernel_size[0] > 1:
                        module.dilation = (dilation, dilation)
                        module.padding = (
                            dilation * (module.kernel_size[0] // 2),
                            dilation * (module.kernel_size[1] // 2),
                        )
        elif downsamples:
            stride *= 2
        dilations.append(dilation)
    if stride != output_stride:
        raise ValueError(f"Cannot reach output stride {output_stride} with this ResNet (its stride is {stride}).")
    return dilations


class DeepLabV2ResNetLayer(GradientCheckpointingLayer):
    """
    A residual block of transformers' ResNet (`ResNetBottleNeckLayer` or `ResNetBasicLayer`) as a
    `GradientCheckpointingLayer`: with activation checkpointing on, its activations are recomputed in the backward
    pass instead of kept. It takes over the block's own modules under their own names (`shortcut`, `layer`,
    `activation`), so the state-dict keys are those of the ResNet and any ResNet or DeepLab-v2 checkpoint loads.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.shortcut = block.shortcut
        self.layer = block.layer
        self.activation = block.activation

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(hidden_state)
        return self.activation(self.layer(hidden_state) + residual)


def make_resnet_checkpointable(resnet: ResNetModel) -> None:
    """Puts every residual block of `resnet`'s stages, in place, into a `DeepLabV2ResNetLayer` (same parameters,
    same names)."""
    for stage in resnet.encoder.stages:
        stage.layers = nn.Sequential(*(DeepLabV2ResNetLayer(block) for block in stage.layers))


class AtrousSpatialPyramidClassifier(nn.Module):
    """
    DeepLab-v2's ASPP classifier: parallel 3x3 convolutions with different dilation rates, each mapping the backbone
    features straight to class scores; the branch outputs are summed.

    Input `(B, in_channels, h, w)`, output `(B, num_labels, h, w)`.
    """

    def __init__(self, in_channels: int, num_labels: int, atrous_rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_labels, kernel_size=3, padding=rate, dilation=rate, bias=True)
            for rate in atrous_rates
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.branches[0](features)
        for branch in self.branches[1:]:
            logits = logits + branch(features)
        return logits


class DeepLabV2PreTrainedModel(PreTrainedModel):
    config_class = DeepLabV2Config
    config: DeepLabV2Config
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ResNetConvLayer", "ResNetShortCut"]
    # transformers' ResNet has no checkpointed layers of its own: `DeepLabV2ForSemanticSegmentation` turns each
    # residual block into a `DeepLabV2ResNetLayer`, which transformers' activation checkpointing recomputes.
    supports_gradient_checkpointing = True
    # The loss is a plain mean over the labelled pixels: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The ResNet backbone is a PreTrainedModel of its own and is initialised by ResNet's `_init_weights`, so the
        # only convolutions that reach this method are the ASPP branches (DeepLab-v2: N(0, 0.01), zero bias).
        if isinstance(module, nn.Conv2d):
            init.normal_(module.weight, mean=0.0, std=self.config.classifier_init_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class DeepLabV2ForSemanticSegmentation(DeepLabV2PreTrainedModel):
    """
    DeepLab-v2: a ResNet with output stride 8 and the ASPP classifier. `logits` are class scores at 1/8 of the input
    resolution, `(B, C, ceil(H/8), ceil(W/8))`; the loss upsamples them to the labels' size.
    """

    def __init__(self, config: DeepLabV2Config):
        super().__init__(config)
        self.resnet = ResNetModel(config.backbone_config)
        make_resnet_checkpointable(self.resnet)
        self.backbone_dilations = dilate_resnet(self.resnet, config.output_stride)
        self.aspp = AtrousSpatialPyramidClassifier(config.backbone_hidden_size, config.num_labels, config.atrous_rates)
        self.post_init()
        self._freeze_batch_norm()

    @classmethod
    def from_pretrained_backbone(
        cls,
        backbone_name_or_path: str,
        config: DeepLabV2Config | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **config_kwargs,
    ) -> "DeepLabV2ForSemanticSegmentation":
        """
        A DeepLab-v2 whose backbone is loaded from a transformers ResNet checkpoint and whose ASPP classifier is
        freshly initialised.

        `backbone_name_or_path` is a Hub id (e.g. `"microsoft/resnet-101"`, ImageNet-1k weights) or a local directory
        holding a `ResNetModel` or `ResNetForImageClassification` checkpoint (its ImageNet classifier is dropped).
        `config_kwargs` (e.g. `id2label=...`, `output_stride=16`) build the `DeepLabV2Config`; alternatively pass
        `config`, whose `backbone_config` is replaced by the checkpoint's.

        ```python
        >>> from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
        >>> model = DeepLabV2ForSemanticSegmentation.from_pretrained_backbone("microsoft/resnet-101")  # VOC classes
        ```
        """
        hub_kwargs = dict(cache_dir=cache_dir, revision=revision, token=token, local_files_only=local_files_only)
        backbone_config = ResNetConfig.from_pretrained(backbone_name_or_path, **hub_kwargs)
        # The checkpoint's own task head (e.g. 1000 ImageNet labels) does not belong to the backbone.
        backbone_config.architectures = None
        backbone_config.id2label = None
        backbone_config.label2id = None
        backbone_config.num_labels = 2
        if config is None:
            config = DeepLabV2Config(backbone_config=backbone_config, **config_kwargs)
        else:
            if config_kwargs:
                raise ValueError("Pass either `config` or config keyword arguments, not both.")
            config = config.__class__.from_dict({**config.to_dict(), "backbone_config": backbone_config.to_dict()})
        return cls.from_pretrained(backbone_name_or_path, config=config, **hub_kwargs)

    def _freeze_batch_norm(self) -> None:
        if not self.config.freeze_batch_norm:
            return
        for module in self.resnet.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)

    def train(self, mode: bool = True):
        """`nn.Module.train`, but the backbone's BatchNorm layers stay in eval mode if `config.freeze_batch_norm`."""
        super().train(mode)
        self._freeze_batch_norm()
        return self

    def _check_pixel_values(self, pixel_values) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}.")
        channels = self.config.backbone_config.num_channels
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"`pixel_values` has {pixel_values.shape[1]} channels; the model expects {channels} "
                "(use the image processor, which converts any image to RGB)."
            )

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Cross-entropy between `logits` `(B, C, h, w)`, bilinearly upsampled to the labels' size, and class-id
        `labels` `(B, H, W)`; pixels equal to `config.semantic_loss_ignore_index` (255) are ignored.
        """
        ignore_index = self.config.semantic_loss_ignore_index
        if labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"`labels` must be class ids of shape (batch_size, height, width) with batch_size {logits.shape[0]}; "
                f"got shape {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"`labels` must be an integer tensor of class ids, got dtype {labels.dtype}.")
        labels = labels.long()
        valid = labels[labels != ignore_index]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.config.num_labels):
            raise ValueError(
                f"`labels` holds class ids {int(valid.min())}..{int(valid.max())}; "
                f"expected 0..{self.config.num_labels - 1}"
                f" or {ignore_index} (ignored)."
            )
        if valid.numel() == 0:
            # A batch of crops with no labelled pixel (possible with sparse pseudo-labels) teaches nothing; a zero
            # that keeps the graph lets distributed training step in lockstep instead of stopping on a NaN.
            return logits.float().sum() * 0.0
        upsampled = F.interpolate(
            logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=self.config.align_corners
        )
        return F.cross_entropy(upsampled, labels, ignore_index=ignore_index)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Images normalised with ImageNet statistics (`cpfcte_hf.deeplab.deeplab_image_processor()`); any size.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class ids per pixel, 0..C-1, or `config.semantic_loss_ignore_index` (255) for pixels to ignore.
                Usually the input's size; the logits are upsampled to it. When given, `loss` is returned.
            output_hidden_states (`bool`, *optional*):
                Return the backbone's feature maps (stem output and each stage).
            return_dict (`bool`, *optional*):
                Return a [`SemanticSegmenterOutput`] (default) or a plain tuple.

        Example:

        ```python
        >>> import torch
        >>> from cpfcte_hf.deeplab import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
        >>> model = DeepLabV2ForSemanticSegmentation(DeepLabV2Config()).eval()
        >>> model(torch.randn(1, 3, 321, 321)).logits.shape
        torch.Size([1, 21, 41, 41])
        ```
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self._check_pixel_values(pixel_values)
        outputs = self.resnet(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        hidden_states = outputs.hidden_states
        logits = self.aspp(outputs.last_hidden_state)
        loss = self.compute_loss(logits, labels) if labels is not None else None

        if not return_dict:
            output = (logits,) + ((hidden_states,) if output_hidden_states else ())
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)


__all__ = [
    "AtrousSpatialPyramidClassifier",
    "DeepLabV2ForSemanticSegmentation",
    "DeepLabV2PreTrainedModel",
    "DeepLabV2ResNetLayer",
    "dilate_resnet",
    "make_resnet_checkpointable",
]
