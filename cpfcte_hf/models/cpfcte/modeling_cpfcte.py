# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""PyTorch CPF-CTE: Context Patch Fusion with Class Token Enhancement for weakly supervised segmentation.

The model reads an image, encodes it with a ViT, and predicts a class distribution for every patch;
it is trained from image-level tags only, through Top-K pooling of the patch probabilities.

    pixel_values (B, 3, H, W)
      -> ViT-family encoder (final LayerNorm,               patches (B, h*w, D), h = H/p, w = W/p
         CLS / distillation / register tokens dropped)
      -> ClassTokenFusion                                   (B, h*w, D)
      -> ContextFusionBiLSTM over the (h, w) grid           (B, h, w, D)
      -> PatchClassifier                                    logits (B, C, h, w)
      -> softmax over C, TopKPooling over h*w               image_scores (B, C)
      -> binary cross-entropy against multi-hot labels (B, C), background included, + L2 on the classifier

This file is copied next to the weights by `save_pretrained` (remote code): it imports only torch,
transformers and, relatively, `configuration_cpfcte`.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_cpfcte import LSTM_DROPOUT_MODES, CPFCTEConfig, backbone_config_from


@dataclass
class CPFCTESegmentationOutput(ModelOutput):
    """
    Output of [`CPFCTEForWeaklySupervisedSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Top-K binary cross-entropy against the image-level labels plus the classifier's L2 penalty.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / patch_size, width / patch_size)`):
            Patch scores before the softmax. `logits.softmax(1)` are the per-patch class probabilities.
        image_scores (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Image-level class probabilities: the pooled (Top-K / max / avg) patch probabilities.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The encoder's hidden states (embeddings and every layer), each `(batch_size, T + h*w, hidden_size)`, where
            T is the encoder's number of prefix tokens ([`encoder_prefix_tokens`]: 1 for ViT's CLS token).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The encoder's attention maps, each `(batch_size, num_heads, T + h*w, T + h*w)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_scores: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ClassTokenFusion(nn.Module):
    r"""
    Fuses C learnable class tokens into every patch token (paper section 3.2).

    Each patch attends over the class tokens; the attended token is concatenated to the patch and projected back:

        a_pc    = softmax_c( q(p) . k(t_c) / sqrt(D) )
        e_p     = sum_c a_pc v(t_c)
        fused_p = W [p ; e_p] + b

    Concatenating the same constant token to every patch would only add a bias; the soft assignment makes the
    fused feature depend on the patch, which is the "attention between class tokens and patch tokens" of the paper.

    Input `(B, N, D)` patch tokens; output `(B, N, D)` fused tokens and `(B, N, C)` assignment weights.
    """

    def __init__(self, hidden_size: int, num_classes: int):
        super().__init__()
        self.class_tokens = nn.Parameter(torch.zeros(num_classes, hidden_size))
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.projection = nn.Linear(2 * hidden_size, hidden_size)
        self.scale = hidden_size**-0.5

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.query(patches)
        key = self.key(self.class_tokens)
        value = self.value(self.class_tokens)
        assignment = torch.softmax(torch.matmul(query, key.t()) * self.scale, dim=-1)
        class_context = torch.matmul(assignment, value)
        return self.projection(torch.cat([patches, class_context], dim=-1)), assignment


class ContextFusionBiLSTM(nn.Module):
    """
    CF-BiLSTM (paper section 3.3, ViT-PCM's HV-BiLSTM): a bidirectional LSTM along every row and one along every
    column of the patch grid, both reading the same input. With `projection=True` (paper eq. 6)
    `[h_fwd; h_bwd; v_fwd; v_bwd]` is projected back to D; with `projection=False` (ViT-PCM) the `4 * lstm_hidden_size`
    features are the output, and the classifier reads them directly.

    `lstm_dropout_mode` chooses the dropout inside the LSTMs, at rate `dropout`: `"none"` (only the element-wise
    dropout on the shared input), or `"per_sequence"` (Keras' `LSTM(dropout=...)`, as in ViT-PCM: a mask over the
    input features drawn once per row or column sequence, for each LSTM and each direction, fixed along the
    sequence). The per-direction masks are exact: during training the two masked copies of the input run through the
    bidirectional LSTM together and the forward half of one and the backward half of the other are kept, which
    doubles the LSTM cost of a training step.

    `projection_dropout` is the dropout on `[h; v]` before the projection (None: `dropout`; 0: none, as ViT-PCM,
    which has no projection and whose only dropout there is the classifier's).

    All rows of all images go through one batched LSTM call (and likewise all columns).
    With `residual=True` the output is added to the input instead of replacing it (not in the paper; see
    `CPFCTEConfig.context_fusion_residual`). Input `(B, h, w, D)`, output `(B, h, w, D)`, or
    `(B, h, w, 4 * lstm_hidden_size)` without the projection.
    """

    def __init__(
        self,
        hidden_size: int,
        lstm_hidden_size: int,
        dropout: float,
        residual: bool = False,
        projection: bool = True,
        lstm_dropout_mode: str = "none",
        projection_dropout: float | None = None,
    ):
        super().__init__()
        if lstm_dropout_mode not in LSTM_DROPOUT_MODES:
            raise ValueError(f"`lstm_dropout_mode` must be one of {LSTM_DROPOUT_MODES}, got {lstm_dropout_mode!r}.")
        self.residual = residual
        self.dropout = dropout
        self.lstm_dropout_mode = lstm_dropout_mode
        self.output_size = hidden_size if projection else 4 * lstm_hidden_size
        self.input_dropout = nn.Dropout(dropout)
        self.row_lstm = nn.LSTM(hidden_size, lstm_hidden_size, batch_first=True, bidirectional=True)
        self.column_lstm = nn.LSTM(hidden_size, lstm_hidden_size, batch_first=True, bidirectional=True)
        # ViT-PCM has no dropout between the LSTMs and its classifier other than the classifier's own.
        projection_dropout = dropout if projection_dropout is None else projection_dropout
        self.output_dropout = nn.Dropout(projection_dropout) if projection else nn.Identity()
        self.projection = nn.Linear(4 * lstm_hidden_size, hidden_size) if projection else nn.Identity()

    def _bidirectional(self, lstm: nn.LSTM, sequences: torch.Tensor) -> torch.Tensor:
        """`(N, L, D)` -> `(N, L, 2 * lstm_hidden_size)`, with one dropout mask per sequence and direction if asked."""
        if not (self.training and self.lstm_dropout_mode == "per_sequence" and self.dropout > 0):
            return lstm(sequences)[0]
        count, _, features = sequences.shape
        keep = 1.0 - self.dropout
        masks = sequences.new_empty(2, count, 1, features).bernoulli_(keep).div_(keep)
        outputs, _ = lstm((sequences.unsqueeze(0) * masks).reshape(2 * count, *sequences.shape[1:]))
        hidden = lstm.hidden_size
        return torch.cat([outputs[:count, :, :hidden], outputs[count:, :, hidden:]], dim=-1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        batch_size, height, width, hidden_size = grid.shape
        inputs = grid
        grid = self.input_dropout(grid)
        rows = self._bidirectional(self.row_lstm, grid.reshape(batch_size * height, width, hidden_size))
        rows = rows.reshape(batch_size, height, width, -1)
        columns = grid.transpose(1, 2).reshape(batch_size * width, height, hidden_size)
        columns = self._bidirectional(self.column_lstm, columns)
        columns = columns.reshape(batch_size, width, height, -1).transpose(1, 2)
        fused = self.projection(self.output_dropout(torch.cat([rows, columns], dim=-1)))
        return inputs + fused if self.residual else fused


class PatchClassifier(nn.Module):
    """Dropout then a bias-free linear map D -> C (paper eq. 7; ViT-PCM). Input `(..., D)`, output `(..., C)`."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.zeros(num_classes, hidden_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self.dropout(features), self.weight)

    def l2_penalty(self) -> torch.Tensor:
        """`sum(W**2)`, the Keras `L2` regulariser of ViT-PCM (scaled by `classifier_l2_weight` in the loss)."""
        return self.weight.float().pow(2).sum()


class TopKPooling(nn.Module):
    """
    Image score per class from patch probabilities (paper eq. 8): the mean of the K largest (`"topk"`),
    the largest (`"max"`, = topk with K=1) or the mean of all (`"avg"`, = topk with K=h*w).

    `top_k` is a count of patches (an int >= 1), or a fraction of the patches (a float in (0, 1)), so that the same
    setting covers the same share of the image at any grid size: K = max(1, round(top_k * h*w)). K larger than the
    number of patches uses all patches. Input `(B, C, N)`, output `(B, C)`.
    """

    def __init__(self, pooling: str = "topk", top_k: int | float = 1):
        super().__init__()
        self.pooling = pooling
        self.top_k = top_k

    def num_patches_pooled(self, num_patches: int) -> int:
        """K for a grid of `num_patches` patches."""
        if self.pooling == "max":
            return 1
        if self.pooling == "avg":
            return num_patches
        return min(resolve_top_k(self.top_k, num_patches), num_patches)

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        if self.pooling == "max":
            return probabilities.amax(dim=-1)
        if self.pooling == "avg":
            return probabilities.mean(dim=-1)
        k = self.num_patches_pooled(probabilities.shape[-1])
        return probabilities.topk(k, dim=-1).values.mean(dim=-1)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, top_k={self.top_k}"


def resolve_top_k(top_k: int | float, num_patches: int) -> int:
    """
    K of Top-K for `num_patches` patches: a fraction in (0, 1) gives `max(1, round(top_k * num_patches))`; a whole
    number (16 or 16.0) is a count of patches.
    """
    if 0 < top_k < 1:
        return max(1, round(top_k * num_patches))
    return int(top_k)


def top_k_bce_loss(image_scores: torch.Tensor, labels: torch.Tensor, epsilon: float = 1e-7) -> torch.Tensor:
    """
    Multi-label binary cross-entropy (paper eq. 9) between pooled image scores `(B, C)` in [0, 1] and multi-hot
    labels `(B, C)`, averaged over classes and images. Computed in float32 with scores clipped to
    `[epsilon, 1 - epsilon]` (what Keras does in ViT-PCM); written out because `F.binary_cross_entropy`
    refuses to run under CUDA autocast.
    """
    scores = image_scores.float().clamp(epsilon, 1.0 - epsilon)
    labels = labels.to(scores.dtype)
    return -(labels * scores.log() + (1.0 - labels) * (1.0 - scores).log()).mean()


@dataclass(frozen=True)
class EncoderFamily:
    """
    What CPF-CTE needs to know about one transformers ViT-family encoder (keyed by its config's `model_type`).

    Args:
        layers: dotted name of the encoder's list of transformer blocks.
        final_norm: dotted name of the LayerNorm after the last block (trained with the last blocks).
        init_kwargs: passed to `AutoModel.from_config`, e.g. to leave out a pooler CPF-CTE does not use.
        interpolates_by_argument: the encoder's `forward` takes `interpolate_pos_encoding`; otherwise it always
            interpolates its position embeddings to the input size by itself (DINOv2).
        patch_norm: dotted name of a LayerNorm that the encoder applies to its pooled token only; CPF-CTE applies it
            to the patch tokens as well, so that every family hands the heads normalised tokens (CLIP).
    """

    layers: str
    final_norm: str
    init_kwargs: dict = field(default_factory=dict)
    interpolates_by_argument: bool = True
    patch_norm: str | None = None


ENCODER_FAMILIES = {
    "vit": EncoderFamily("layers", "layernorm", init_kwargs={"add_pooling_layer": False}),
    "deit": EncoderFamily("layers", "layernorm", init_kwargs={"add_pooling_layer": False}),
    "dinov2": EncoderFamily("encoder.layer", "layernorm", interpolates_by_argument=False),
    "dinov2_with_registers": EncoderFamily("encoder.layer", "layernorm", interpolates_by_argument=False),
    "clip_vision_model": EncoderFamily("encoder.layers", "post_layernorm", patch_norm="post_layernorm"),
    "siglip_vision_model": EncoderFamily("encoder.layers", "post_layernorm"),
}


def encoder_prefix_tokens(backbone_config: PreTrainedConfig) -> int:
    """
    Tokens the encoder puts before the patch tokens: CLS (ViT, DINOv2, CLIP), CLS and distillation (DeiT), CLS and
    registers (DINOv2 with registers), none (SigLIP).
    """
    model_type = backbone_config.model_type
    if model_type == "siglip_vision_model":
        return 0
    if model_type == "deit":
        return 2
    if model_type == "dinov2_with_registers":
        return 1 + backbone_config.num_register_tokens
    return 1


def build_encoder(backbone_config: PreTrainedConfig) -> PreTrainedModel:
    """The bare encoder of `backbone_config` (no pooler, no task head), built by `AutoModel.from_config`."""
    return AutoModel.from_config(backbone_config, **ENCODER_FAMILIES[backbone_config.model_type].init_kwargs)


@contextmanager
def _attention_maps_enabled(encoder: PreTrainedModel, enabled: bool):
    """SDPA and flash attention return no attention maps: run the encoder eagerly while maps are requested."""
    previous = encoder.config._attn_implementation
    switch = enabled and previous != "eager"
    if switch:
        encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            encoder.set_attn_implementation(previous)


class CPFCTEPreTrainedModel(PreTrainedModel):
    config_class = CPFCTEConfig
    config: CPFCTEConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "ContextFusionBiLSTM"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The loss is a plain mean over the batch: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        config = self.config
        if isinstance(module, ClassTokenFusion):
            init.normal_(module.class_tokens, mean=0.0, std=config.class_token_init_std)
        elif isinstance(module, PatchClassifier):
            init.normal_(module.weight, mean=0.0, std=config.classifier_init_std)
        elif isinstance(module, nn.LSTM):
            # Keras' LSTM defaults, as in ViT-PCM: Glorot input weights, orthogonal recurrent weights,
            # zero biases with the forget gate's set to 1.
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                elif name.startswith("bias_ih"):
                    hidden = module.hidden_size
                    init.constant_(param, 0.0)
                    if not getattr(param, "_is_hf_initialized", False):
                        with torch.no_grad():
                            param[hidden : 2 * hidden].fill_(1.0)
                elif name.startswith("bias_hh"):
                    init.zeros_(param)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class CPFCTEForWeaklySupervisedSegmentation(CPFCTEPreTrainedModel):
    """
    CPF-CTE: a ViT encoder, class-token fusion, CF-BiLSTM, patch classifier and Top-K pooling, trained from
    image-level labels. `logits` are per-patch class scores `(B, C, h, w)`, usable wherever a semantic
    segmentation model's logits are (e.g. `pipeline("image-segmentation")`).
    """

    def __init__(self, config: CPFCTEConfig):
        super().__init__(config)
        hidden_size = config.backbone_config.hidden_size
        # The encoder keeps the attribute name `vit` whatever its family, so that checkpoints of the ViT-only
        # versions (keys `vit.*`) still load and every family saves under the same prefix.
        self.vit = build_encoder(config.backbone_config)
        self.encoder_family = ENCODER_FAMILIES[config.backbone_config.model_type]
        self.num_prefix_tokens = encoder_prefix_tokens(config.backbone_config)
        self.class_token_fusion = ClassTokenFusion(hidden_size, config.num_labels) if config.use_class_tokens else None
        self.context_fusion = (
            ContextFusionBiLSTM(
                hidden_size,
                config.lstm_hidden_size,
                config.context_fusion_dropout,
                config.context_fusion_residual,
                projection=config.context_fusion_projection,
                lstm_dropout_mode=config.context_fusion_lstm_dropout_mode,
                projection_dropout=config.context_fusion_projection_dropout,
            )
            if config.use_context_fusion
            else None
        )
        classifier_size = self.context_fusion.output_size if self.context_fusion is not None else hidden_size
        self.patch_classifier = PatchClassifier(classifier_size, config.num_labels, config.classifier_dropout)
        self.pooling = TopKPooling(config.pooling, config.pooling_top_k)
        self.post_init()

    @classmethod
    def from_pretrained_backbone(
        cls,
        backbone_name_or_path: str,
        config: CPFCTEConfig | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        attn_implementation: str | None = None,
        **config_kwargs,
    ) -> "CPFCTEForWeaklySupervisedSegmentation":
        """
        A CPF-CTE model whose encoder is loaded from a pretrained ViT-family checkpoint and whose heads are freshly
        initialised.

        `backbone_name_or_path` is a Hub id or a local directory of any supported encoder: ViT
        (`"google/vit-base-patch16-384"`, the paper's ViT-B/16), DeiT, DINOv2 (`"facebook/dinov2-base"`, with or
        without registers), CLIP or SigLIP (the vision tower of a full checkpoint is taken). The checkpoint may be
        the bare encoder or its image-classification model (whose head is dropped). `config_kwargs` (e.g.
        `id2label=...`, `pooling_top_k=...`) build the `CPFCTEConfig`; alternatively pass `config`, whose
        `backbone_config` is replaced by the checkpoint's.

        ```python
        >>> model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
        ...     "google/vit-base-patch16-384", id2label=dict(enumerate(VOC_CLASSES)))
        ```
        """
        hub_kwargs = dict(cache_dir=cache_dir, revision=revision, token=token, local_files_only=local_files_only)
        backbone_config = backbone_config_from(AutoConfig.from_pretrained(backbone_name_or_path, **hub_kwargs))
        # The checkpoint's own task head (e.g. 1000 ImageNet labels) does not belong to the backbone.
        backbone_config.architectures = None
        backbone_config.id2label = None
        backbone_config.num_labels = 2
        if config is None:
            config = CPFCTEConfig(backbone_config=backbone_config, **config_kwargs)
        else:
            if config_kwargs:
                raise ValueError("Pass either `config` or config keyword arguments, not both.")
            config = config.__class__.from_dict({**config.to_dict(), "backbone_config": backbone_config.to_dict()})
        model = cls(config)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)

        family = ENCODER_FAMILIES[config.backbone_config.model_type]
        encoder, loading_info = AutoModel.from_pretrained(
            backbone_name_or_path,
            config=config.backbone_config,
            output_loading_info=True,
            **hub_kwargs,
            **family.init_kwargs,
        )
        if loading_info["missing_keys"]:
            raise ValueError(
                f"{backbone_name_or_path} lacks encoder weights {sorted(loading_info['missing_keys'])[:5]} "
                f"(of {len(loading_info['missing_keys'])} missing): it is not a pretrained "
                f"{config.backbone_config.model_type} encoder."
            )
        model.vit.load_state_dict(encoder.state_dict(), strict=True)
        model.name_or_path = model.config.name_or_path = str(backbone_name_or_path)
        return model

    def encoder_layers(self) -> nn.ModuleList:
        """The encoder's transformer blocks, first to last, whatever its family (for partial fine-tuning)."""
        return self.vit.get_submodule(self.encoder_family.layers)

    def encoder_final_norm(self) -> nn.Module:
        """The encoder's LayerNorm after the last block."""
        return self.vit.get_submodule(self.encoder_family.final_norm)

    def _check_pixel_values(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}.")
        channels = self.config.backbone_config.num_channels
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"`pixel_values` has {pixel_values.shape[1]} channels; the model expects {channels} "
                "(use the image processor, which converts any image to RGB)."
            )
        height, width = pixel_values.shape[-2:]
        patch = self.config.patch_size
        if height % patch or width % patch or height < patch or width < patch:
            suggestion = f"{max(1, round(height / patch)) * patch}x{max(1, round(width / patch)) * patch}"
            raise ValueError(
                f"Input size {height}x{width} is not a multiple of the patch size {patch}: resize the image to a "
                f"multiple of {patch} (e.g. {suggestion}); CPFCTEImageProcessor does this."
            )
        image_size = self.config.backbone_config.image_size
        image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        # DINOv2 interpolates by itself; at the native size interpolation is the identity in every family.
        if not interpolate_pos_encoding and (height, width) != image_size:
            raise ValueError(
                f"Input size {height}x{width} differs from the backbone's {image_size[0]}x{image_size[1]} and "
                "`interpolate_pos_encoding` is False; set it to True to interpolate the position embeddings."
            )

    def compute_loss(self, image_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Top-K BCE (eq. 9) against multi-hot `labels` `(B, C)` plus `classifier_l2_weight * sum(W**2)`."""
        if labels.shape != image_scores.shape:
            raise ValueError(
                f"`labels` must be multi-hot of shape (batch_size, num_labels) = {tuple(image_scores.shape)} with "
                f"background as class 0; got shape {tuple(labels.shape)}."
            )
        loss = top_k_bce_loss(image_scores, labels, self.config.bce_epsilon)
        return loss + self.config.classifier_l2_weight * self.patch_classifier.l2_penalty()

    def _encode(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool,
        output_attentions: bool,
        interpolate_pos_encoding: bool,
    ) -> tuple[ModelOutput, torch.Tensor]:
        """The encoder's outputs and its patch tokens `(B, h*w, D)`, normalised as every family hands them on."""
        encoder_kwargs = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        if self.encoder_family.interpolates_by_argument:
            encoder_kwargs["interpolate_pos_encoding"] = interpolate_pos_encoding
        with _attention_maps_enabled(self.vit, output_attentions):
            encoder_outputs = self.vit(pixel_values, return_dict=True, **encoder_kwargs)
        # Drop the prefix tokens (CLS, distillation, registers); patches are in row-major (h, w) order.
        patches = encoder_outputs.last_hidden_state[:, self.num_prefix_tokens :]
        if self.encoder_family.patch_norm is not None:
            patches = self.vit.get_submodule(self.encoder_family.patch_norm)(patches)
        return encoder_outputs, patches

    def _classify_patches(self, patches: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """Class-token fusion, CF-BiLSTM over the `(h, w)` grid and the patch classifier: logits `(B, C, h, w)`."""
        if self.class_token_fusion is not None:
            patches, _ = self.class_token_fusion(patches)
        grid = patches.reshape(patches.shape[0], *grid_size, -1)
        if self.context_fusion is not None:
            grid = self.context_fusion(grid)
        return self.patch_classifier(grid).permute(0, 3, 1, 2)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ) -> CPFCTESegmentationOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Images normalised by [`CPFCTEImageProcessor`]; height and width multiples of the patch size.
            labels (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*):
                Multi-hot image-level labels, background (class 0) included. When given, `loss` is returned.
            output_hidden_states (`bool`, *optional*):
                Return the encoder's hidden states. Defaults to `config.output_hidden_states`.
            output_attentions (`bool`, *optional*):
                Return the encoder's attention maps (the encoder runs with eager attention for that call). Defaults to
                `config.output_attentions`.
            interpolate_pos_encoding (`bool`, *optional*):
                Interpolate the position embeddings to the input size. Defaults to `config.interpolate_pos_encoding`.
            return_dict (`bool`, *optional*):
                Return a [`CPFCTESegmentationOutput`] (default) or a plain tuple.

        Example:

        ```python
        >>> import torch
        >>> from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation
        >>> model = CPFCTEForWeaklySupervisedSegmentation(CPFCTEConfig()).eval()
        >>> outputs = model(torch.randn(1, 3, 384, 384))
        >>> outputs.logits.shape, outputs.image_scores.shape
        (torch.Size([1, 21, 24, 24]), torch.Size([1, 21]))
        ```
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if interpolate_pos_encoding is None:
            interpolate_pos_encoding = self.config.interpolate_pos_encoding
        self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        grid_size = tuple(side // self.config.patch_size for side in pixel_values.shape[-2:])

        encoder_outputs, patches = self._encode(
            pixel_values, output_hidden_states, output_attentions, interpolate_pos_encoding
        )
        logits = self._classify_patches(patches, grid_size)  # (B, C, h, w)
        image_scores = self.pooling(logits.float().softmax(dim=1).flatten(2))  # (B, C)
        loss = self.compute_loss(image_scores, labels) if labels is not None else None
        output = CPFCTESegmentationOutput(
            loss=loss,
            logits=logits,
            image_scores=image_scores,
            hidden_states=encoder_outputs.hidden_states if output_hidden_states else None,
            attentions=encoder_outputs.attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "ENCODER_FAMILIES",
    "EncoderFamily",
    "build_encoder",
    "encoder_prefix_tokens",
    "CPFCTEForWeaklySupervisedSegmentation",
    "CPFCTEPreTrainedModel",
    "CPFCTESegmentationOutput",
    "ClassTokenFusion",
    "ContextFusionBiLSTM",
    "PatchClassifier",
    "TopKPooling",
    "resolve_top_k",
    "top_k_bce_loss",
]
