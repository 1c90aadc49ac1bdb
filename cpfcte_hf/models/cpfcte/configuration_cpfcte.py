# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""CPF-CTE model configuration.

This file is copied next to the weights by `save_pretrained` (remote code), so it imports
only `transformers` and nothing else from this package.
"""

from transformers import AutoConfig, PreTrainedConfig, ViTConfig
from transformers.configuration_utils import SubConfigSpec


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

POOLING_TYPES = ("topk", "max", "avg")
# The transformers encoders `backbone_config` may configure (their `model_type`): ViT, DeiT (CLS + distillation token),
# DINOv2 (with and without register tokens), and the CLIP and SigLIP vision towers. `modeling_cpfcte` knows each one's
# prefix tokens and how it interpolates its position embeddings.
BACKBONE_MODEL_TYPES = (
    "vit",
    "deit",
    "dinov2",
    "dinov2_with_registers",
    "clip_vision_model",
    "siglip_vision_model",
)
# Full two-tower configs whose vision tower is taken when one is given as `backbone_config`.
_VISION_TOWER_PARENTS = {"clip": "vision_config", "siglip": "vision_config"}
# Backbone fields that may be given to `CPFCTEConfig` directly, as on a ViT config (`CPFCTEConfig(hidden_size=...)`).
BACKBONE_KWARGS = ("hidden_size", "patch_size")
LSTM_DROPOUT_MODES = ("none", "per_sequence")
# `auto_map` entries that `save_pretrained` cannot write itself (a class registers for one Auto class only).
EXTRA_AUTO_MAP = {
    "AutoModel": "modeling_cpfcte.CPFCTEForWeaklySupervisedSegmentation",
    "AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor",
}


def backbone_config_from(backbone_config: dict | PreTrainedConfig) -> PreTrainedConfig:
    """
    A supported encoder config from a config or its dict (`model_type` picks the class; a dict without one is a ViT,
    as in checkpoints written before other backbones were supported). A full CLIP or SigLIP config gives its vision
    tower.
    """
    if isinstance(backbone_config, dict):
        values = dict(backbone_config)
        model_type = values.pop("model_type", None) or ViTConfig.model_type
        if model_type in _VISION_TOWER_PARENTS:
            values = dict(values.get(_VISION_TOWER_PARENTS[model_type]) or {})
            model_type = values.pop("model_type", None) or f"{model_type}_vision_model"
        if model_type not in BACKBONE_MODEL_TYPES:
            raise ValueError(_unsupported_backbone_message(model_type))
        backbone_config = AutoConfig.for_model(model_type, **values)
    elif backbone_config.model_type in _VISION_TOWER_PARENTS:
        backbone_config = getattr(backbone_config, _VISION_TOWER_PARENTS[backbone_config.model_type])
    if backbone_config.model_type not in BACKBONE_MODEL_TYPES:
        raise ValueError(_unsupported_backbone_message(backbone_config.model_type))
    if getattr(backbone_config, "vision_use_head", False):
        # SigLIP's attention-pooling head makes an image embedding CPF-CTE does not use: leave it out of the model
        # (its weights in a checkpoint are skipped) rather than train parameters that get no gradient.
        backbone_config.vision_use_head = False
    return backbone_config


def _unsupported_backbone_message(model_type: str) -> str:
    return (
        f"`backbone_config` has model_type {model_type!r}; CPF-CTE supports the ViT-family encoders "
        f"{', '.join(BACKBONE_MODEL_TYPES)} (and full clip / siglip configs, whose vision tower is used)."
    )


def vit_b16_384_config(**kwargs) -> ViTConfig:
    """The ViT-B/16 backbone at 384x384 that CPF-CTE and ViT-PCM use (`google/vit-base-patch16-384` shapes)."""
    defaults = dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=16,
        layer_norm_eps=1e-12,
    )
    defaults.update(kwargs)
    return ViTConfig(**defaults)


class CPFCTEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CPFCTEForWeaklySupervisedSegmentation`] model: a ViT encoder, learnable class tokens
    fused after the encoder, a CF-BiLSTM over the patch grid, a patch classifier and Top-K pooling.
    Defaults reproduce the paper's VOC setup (ViT-B/16 at 384x384, 21 classes with background as class 0).

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the encoder: any ViT-family encoder config of transformers, `ViTConfig`, `DeiTConfig`,
            `Dinov2Config`, `Dinov2WithRegistersConfig`, `CLIPVisionConfig` or `SiglipVisionConfig` (a full
            `CLIPConfig` / `SiglipConfig` gives its vision tower). Defaults to ViT-B/16 at 384x384
            (`vit_b16_384_config()`). `hidden_size=` and `patch_size=` given to `CPFCTEConfig` itself set those
            fields of the backbone config.
        id2label (`dict[int, str]`, *optional*):
            Class names, background first (class 0). Defaults to the 21 PASCAL VOC classes.
            `num_labels` (C) is `len(id2label)`.
        use_class_tokens (`bool`, *optional*, defaults to `True`):
            Fuse C learnable class tokens into every patch after the encoder (paper Table 4 ablation).
        use_context_fusion (`bool`, *optional*, defaults to `True`):
            Run the CF-BiLSTM over the patch grid (paper Table 4 ablation).
        pooling (`str`, *optional*, defaults to `"topk"`):
            How patch probabilities become image scores: `"topk"` (mean of the K largest), `"max"` or `"avg"`
            (paper Table 5 ablation).
        pooling_top_k (`int` or `float`, *optional*, defaults to 16):
            K of Top-K pooling: a number of patches (a whole number), or a fraction of the patches (a float in
            (0, 1), e.g. 0.03 = the top 3 %: K = max(1, round(0.03 * h*w))), which transfers between grid sizes.
            Also accepted as `top_k=` (the name `top_k` itself cannot be stored because
            transformers reserves it for generation). The paper's K was lost from its text; ViT-PCM used K=1 (max).
            16 is what measured best in our K sweep (1, 4, 16, 32) on the procedural set; see the README.
        class_token_init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the class tokens.
        lstm_hidden_size (`int`, *optional*, defaults to 192):
            Hidden size of each LSTM direction; the four outputs (row fwd/bwd, column fwd/bwd) concatenate to
            `4 * lstm_hidden_size` (= 768 = D for ViT-B, as in ViT-PCM) and are projected back to D.
        context_fusion_residual (`bool`, *optional*, defaults to `False`):
            Add the CF-BiLSTM's projection to its input (`x + W[h; v]`) instead of replacing the input (paper eq. 6
            replaces it). Not in the paper: it keeps each patch's own evidence, which a ViT trained from scratch
            otherwise loses along the rows and columns (measured in the README's demo section).
        context_fusion_projection (`bool`, *optional*, defaults to `True`):
            Project the CF-BiLSTM's `[h; v]` (`4 * lstm_hidden_size`) back to D (paper eq. 6). `False` feeds the
            `4 * lstm_hidden_size` features straight to the patch classifier, as ViT-PCM's HV-BiLSTM does (and drops
            the dropout before the projection: ViT-PCM's only dropout there is the classifier's).
        context_fusion_dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the CF-BiLSTM input (ViT-PCM's 0.2), and, unless `context_fusion_projection_dropout` is set, on
            its concatenated hidden states `[h; v]` before the projection.
        context_fusion_projection_dropout (`float`, *optional*):
            Dropout on `[h; v]` before the projection of eq. 6 (only with `context_fusion_projection`). `None` (the
            default, and checkpoints saved before this field) uses `context_fusion_dropout`; `0.0` is the reference's
            behaviour: ViT-PCM has no projection, and its only dropout between the LSTMs and the classifier is the
            classifier's own (`classifier_dropout`), which applies here too.
        context_fusion_lstm_dropout_mode (`str`, *optional*, defaults to `"none"`):
            Dropout inside the LSTMs at rate `context_fusion_dropout`: `"none"`, or `"per_sequence"` (ViT-PCM's Keras
            `LSTM(dropout=0.2)`: one mask over the input features per row/column sequence, per LSTM and direction).
        classifier_dropout (`float`, *optional*, defaults to 0.2):
            Dropout before the patch classifier.
        classifier_init_std (`float`, *optional*, defaults to 0.05):
            Standard deviation of the normal initialisation of the bias-free patch classifier (ViT-PCM).
        classifier_l2_weight (`float`, *optional*, defaults to 0.01):
            Weight of the L2 penalty `sum(W**2)` on the patch classifier, added to the loss (ViT-PCM).
        bce_epsilon (`float`, *optional*, defaults to 1e-7):
            Image scores are clipped to `[eps, 1 - eps]` before the binary cross-entropy (Keras' clip, as in ViT-PCM).
        interpolate_pos_encoding (`bool`, *optional*, defaults to `True`):
            Interpolate the ViT position embeddings when the input size differs from `backbone_config.image_size`
            (needed for 960x960 pseudo-label inference and for the `image-segmentation` pipeline).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation of the fusion and projection layers.
        inference_size (`int`, *optional*):
            Default resolution (square side) of pseudo-label inference with this checkpoint, set by the training
            preset (960 for 384-px training, as in ViT-PCM; 192 for the 96-px demo). `None` (checkpoints saved
            before this field): pseudo-labelling uses 960 and says so.

    Example:

    ```python
    >>> from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation
    >>> config = CPFCTEConfig()  # ViT-B/16, 384x384, VOC classes
    >>> model = CPFCTEForWeaklySupervisedSegmentation(config)
    ```
    """

    model_type = "cpfcte"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="vit")}

    backbone_config: dict | PreTrainedConfig | None = None
    use_class_tokens: bool = True
    use_context_fusion: bool = True
    pooling: str = "topk"
    pooling_top_k: int | float = 16
    class_token_init_std: float = 0.02
    lstm_hidden_size: int = 192
    context_fusion_residual: bool = False
    context_fusion_projection: bool = True
    context_fusion_dropout: float = 0.2
    context_fusion_projection_dropout: float | None = None
    context_fusion_lstm_dropout_mode: str = "none"
    classifier_dropout: float = 0.2
    classifier_init_std: float = 0.05
    classifier_l2_weight: float = 0.01
    bce_epsilon: float = 1e-7
    interpolate_pos_encoding: bool = True
    initializer_range: float = 0.02
    inference_size: int | None = None

    def __post_init__(self, **kwargs):
        # `top_k` is a generation parameter name: PreTrainedConfig would silently drop it, so take it here.
        top_k = kwargs.pop("top_k", None)
        if top_k is not None:
            self.pooling_top_k = top_k
        if self.backbone_config is None:
            self.backbone_config = vit_b16_384_config()
        else:
            self.backbone_config = backbone_config_from(self.backbone_config)
        # `hidden_size` and `patch_size` live on the backbone: the properties below read them, these set them.
        for name in BACKBONE_KWARGS:
            if name in kwargs:
                setattr(self.backbone_config, name, kwargs.pop(name))
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(VOC_CLASSES))
        super().__post_init__(**kwargs)
        if self.id2label.get(0) == "LABEL_0":  # generated from `num_labels`: class 0 is background everywhere
            self.id2label[0] = "background"
        if self.label2id is None or set(self.label2id) != set(self.id2label.values()):
            self.label2id = {name: i for i, name in self.id2label.items()}
        self._validate_cpfcte_fields()

    def _validate_cpfcte_fields(self):
        if self.pooling not in POOLING_TYPES:
            raise ValueError(f"`pooling` must be one of {POOLING_TYPES}, got {self.pooling!r}.")
        top_k = self.pooling_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or not (0 < top_k < 1 or top_k >= 1):
            raise ValueError(
                f"`pooling_top_k` (top_k) must be a number of patches >= 1 or a fraction of the patches in (0, 1), "
                f"got {top_k!r}."
            )
        if top_k > 1 and not float(top_k).is_integer():
            raise ValueError(f"`pooling_top_k` (top_k) above 1 is a number of patches and must be whole, got {top_k}.")
        if self.context_fusion_lstm_dropout_mode not in LSTM_DROPOUT_MODES:
            raise ValueError(
                f"`context_fusion_lstm_dropout_mode` must be one of {LSTM_DROPOUT_MODES}, "
                f"got {self.context_fusion_lstm_dropout_mode!r}."
            )
        if (
            self.use_context_fusion
            and self.context_fusion_residual
            and not self.context_fusion_projection
            and 4 * self.lstm_hidden_size != self.backbone_config.hidden_size
        ):
            raise ValueError(
                "`context_fusion_residual` without `context_fusion_projection` adds the LSTM features to the patches: "
                f"4 * lstm_hidden_size ({4 * self.lstm_hidden_size}) must equal the hidden size "
                f"({self.backbone_config.hidden_size})."
            )
        if self.num_labels < 2:
            raise ValueError(f"CPF-CTE needs background plus at least one class; got num_labels={self.num_labels}.")
        if self.lstm_hidden_size < 1:
            raise ValueError(f"`lstm_hidden_size` must be >= 1, got {self.lstm_hidden_size}.")
        if self.inference_size is not None and int(self.inference_size) < 1:
            raise ValueError(f"`inference_size` must be >= 1 (or None), got {self.inference_size}.")
        for name in ("context_fusion_dropout", "context_fusion_projection_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}.")

    def to_dict(self):
        output = super().to_dict()
        # Remote code: `AutoModel` maps to the same class as `AutoModelForSemanticSegmentation`, and the image
        # processor is named here too (a model folder then resolves its processor from config.json as well as from
        # preprocessor_config.json, which carries its own type and `auto_map`).
        auto_map = output.get("auto_map")
        if auto_map and "AutoModelForSemanticSegmentation" in auto_map:
            output["auto_map"] = {**EXTRA_AUTO_MAP, **auto_map}
        return output

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        cls._check_model_type(config_dict, str(pretrained_model_name_or_path))
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "CPFCTEConfig":
        cls._check_model_type(config_dict, "this config")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def _check_model_type(cls, config_dict: dict, source: str) -> None:
        """A ViT (or other encoder) checkpoint is not a CPF-CTE one: say how to build a CPF-CTE model on it."""
        model_type = config_dict.get("model_type")
        if model_type in (None, cls.model_type):
            return
        if model_type in BACKBONE_MODEL_TYPES or model_type in _VISION_TOWER_PARENTS:
            hint = (
                f"CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone({source!r}, id2label=...) builds a "
                "CPF-CTE model on it (encoder weights loaded, heads initialised)"
            )
        else:
            hint = f"CPF-CTE encoders are {', '.join(BACKBONE_MODEL_TYPES)}"
        raise ValueError(f"{source} holds a {model_type!r} config, not a CPF-CTE ({cls.model_type!r}) one: {hint}.")

    @property
    def patch_size(self) -> int:
        patch_size = self.backbone_config.patch_size
        return patch_size if isinstance(patch_size, int) else patch_size[0]

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.hidden_size


__all__ = [
    "BACKBONE_MODEL_TYPES",
    "CPFCTEConfig",
    "LSTM_DROPOUT_MODES",
    "VOC_CLASSES",
    "backbone_config_from",
    "vit_b16_384_config",
]
