"""The checks transformers runs on its own models, written for CPF-CTE and run over every supported encoder family.

`CPFCTEModelTester` builds a tiny config on one family's encoder (2 layers, width 32, 8-pixel patches at 32x32) and
its inputs; each test below is parametrised over the families.
"""

import copy

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    DeiTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    SiglipVisionConfig,
    ViTConfig,
)
from transformers.modeling_layers import GradientCheckpointingLayer

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.models.cpfcte.configuration_cpfcte import BACKBONE_MODEL_TYPES


# Prefix tokens (CLS, distillation, registers) each family puts before the patch tokens.
EXPECTED_PREFIX_TOKENS = {
    "vit": 1,
    "deit": 2,
    "dinov2": 1,
    "dinov2_with_registers": 1 + 2,
    "clip_vision_model": 1,
    "siglip_vision_model": 0,
}
FAMILIES = list(BACKBONE_MODEL_TYPES)


def tiny_backbone_config(model_type: str, **overrides):
    """A 2-layer, 32-wide encoder of `model_type` with 8-pixel patches at 32x32 (a 4x4 patch grid)."""
    common = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, num_channels=3
    )
    if model_type == "vit":
        config = ViTConfig(**common, intermediate_size=64, **overrides)
    elif model_type == "deit":
        config = DeiTConfig(**common, intermediate_size=64, **overrides)
    elif model_type == "dinov2":
        config = Dinov2Config(**common, mlp_ratio=2, **overrides)
    elif model_type == "dinov2_with_registers":
        config = Dinov2WithRegistersConfig(**common, mlp_ratio=2, num_register_tokens=2, **overrides)
    elif model_type == "clip_vision_model":
        config = CLIPVisionConfig(**common, intermediate_size=64, **overrides)
    elif model_type == "siglip_vision_model":
        config = SiglipVisionConfig(**common, intermediate_size=64, **overrides)
    else:
        raise ValueError(model_type)
    return config


class CPFCTEModelTester:
    """Tiny configs and inputs for one encoder family, as transformers' `*ModelTester` classes make them."""

    def __init__(self, model_type: str, batch_size: int = 2, num_labels: int = 4, image_size: int = 32):
        self.model_type = model_type
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.image_size = image_size
        self.patch_size = 8
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.hidden_size = 32
        self.num_prefix_tokens = EXPECTED_PREFIX_TOKENS[model_type]

    def get_config(self, **overrides) -> CPFCTEConfig:
        id2label = {0: "background", **{i: f"class_{i}" for i in range(1, self.num_labels)}}
        values = dict(
            backbone_config=tiny_backbone_config(self.model_type),
            id2label=id2label,
            lstm_hidden_size=8,
            pooling_top_k=2,
            context_fusion_dropout=0.0,
            classifier_dropout=0.0,
        )
        values.update(overrides)
        return CPFCTEConfig(**values)

    def prepare_config_and_inputs(self, **overrides):
        config = self.get_config(**overrides)
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        labels = torch.zeros(self.batch_size, self.num_labels)
        labels[:, 0] = 1
        labels[0, 1] = 1
        labels[-1, self.num_labels - 1] = 1
        return config, {"pixel_values": pixel_values, "labels": labels}

    def create_model(self, config: CPFCTEConfig, seed: int = 0) -> CPFCTEForWeaklySupervisedSegmentation:
        torch.manual_seed(seed)
        return CPFCTEForWeaklySupervisedSegmentation(config)

    @property
    def sequence_length(self) -> int:
        return self.num_prefix_tokens + (self.image_size // self.patch_size) ** 2


def test_every_supported_backbone_has_an_encoder_family():
    from cpfcte_hf.models.cpfcte.modeling_cpfcte import ENCODER_FAMILIES

    assert set(ENCODER_FAMILIES) == set(BACKBONE_MODEL_TYPES) == set(EXPECTED_PREFIX_TOKENS)


@pytest.fixture(params=FAMILIES)
def tester(request) -> CPFCTEModelTester:
    return CPFCTEModelTester(request.param)


def test_forward_shapes_and_prefix_tokens(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    assert model.num_prefix_tokens == tester.num_prefix_tokens
    with torch.no_grad():
        outputs = model(**inputs)
    grid = tester.image_size // tester.patch_size
    assert outputs.logits.shape == (tester.batch_size, tester.num_labels, grid, grid)
    assert outputs.image_scores.shape == (tester.batch_size, tester.num_labels)
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    assert outputs.hidden_states is None and outputs.attentions is None


def test_other_input_sizes_interpolate_position_embeddings(tester):
    config, _ = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 48, 40))
    assert outputs.logits.shape == (1, tester.num_labels, 6, 5)
    model_fixed = tester.create_model(tester.get_config(interpolate_pos_encoding=False)).eval()
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model_fixed(torch.randn(1, 3, 48, 40))


def test_save_load_round_trip(tester, tmp_path):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    model.save_pretrained(tmp_path)
    reloaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path).eval()
    assert type(reloaded.config.backbone_config) is type(config.backbone_config)
    saved, loaded = model.config.backbone_config.to_dict(), reloaded.config.backbone_config.to_dict()
    saved.pop("dtype"), loaded.pop("dtype")  # set by loading
    assert loaded == saved
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    with torch.no_grad():
        a, b = model(**inputs), reloaded(**inputs)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_determinism(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.image_scores, second.image_scores)


def test_batching_equivalence(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    with torch.no_grad():
        batched = model(inputs["pixel_values"])
        single = [model(inputs["pixel_values"][i : i + 1]) for i in range(tester.batch_size)]
    for i, output in enumerate(single):
        torch.testing.assert_close(batched.logits[i : i + 1], output.logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batched.image_scores[i : i + 1], output.image_scores, atol=1e-5, rtol=1e-4)


def _check_hidden_states_and_attentions(tester, outputs, hidden_states: bool, attentions: bool):
    if hidden_states:
        assert len(outputs.hidden_states) == tester.num_hidden_layers + 1
        for state in outputs.hidden_states:
            assert state.shape == (tester.batch_size, tester.sequence_length, tester.hidden_size)
    else:
        assert outputs.hidden_states is None
    if attentions:
        assert len(outputs.attentions) == tester.num_hidden_layers
        for attention in outputs.attentions:
            shape = (tester.batch_size, tester.num_attention_heads, tester.sequence_length, tester.sequence_length)
            assert attention.shape == shape
            torch.testing.assert_close(attention.sum(-1), torch.ones(shape[:-1]))
    else:
        assert outputs.attentions is None


@pytest.mark.parametrize("hidden_states,attentions", [(True, False), (False, True), (True, True)])
def test_outputs_requested_by_argument(tester, hidden_states, attentions):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=hidden_states, output_attentions=attentions)
    _check_hidden_states_and_attentions(tester, outputs, hidden_states, attentions)
    # Attention maps need eager attention for that call only: the encoder is back on SDPA afterwards.
    assert model.vit.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("hidden_states,attentions", [(True, False), (False, True), (True, True)])
def test_outputs_requested_by_config(tester, hidden_states, attentions):
    config, inputs = tester.prepare_config_and_inputs()
    config.output_hidden_states = hidden_states
    config.output_attentions = attentions
    model = tester.create_model(config).eval()
    with torch.no_grad():
        outputs = model(**inputs)
        _check_hidden_states_and_attentions(tester, outputs, hidden_states, attentions)
        # The argument wins over the config.
        assert model(**inputs, output_hidden_states=False, output_attentions=False).hidden_states is None


def test_return_dict_false(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    with torch.no_grad():
        loss, logits, image_scores = model(**inputs, return_dict=False)
        reference = model(**inputs)
    assert torch.equal(logits, reference.logits) and torch.equal(loss, reference.loss)


def test_sdpa_and_eager_attention_agree(tester, tmp_path):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    assert model.vit.config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa = model(**inputs)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager" and model.vit.config._attn_implementation == "eager"
    with torch.no_grad():
        eager = model(**inputs)
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=1e-4)
    # And at load time, through the public argument.
    model.save_pretrained(tmp_path)
    loaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.vit.config._attn_implementation == "eager"


def test_training_reaches_every_head_and_the_encoder(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).train()
    model(**inputs).loss.backward()
    without_grad = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # DINOv2's mask token only replaces patches in masked-image pre-training.
    assert without_grad <= {"vit.embeddings.mask_token"}, without_grad


def test_initialisation(tester):
    config, _ = tester.prepare_config_and_inputs()
    a, b = tester.create_model(config, seed=0), tester.create_model(config, seed=0)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.isfinite(p).all(), name
        assert torch.equal(p, q), name  # initialisation depends on the seed only
    lstm = a.context_fusion.row_lstm
    hidden = lstm.hidden_size
    assert torch.all(lstm.bias_ih_l0[hidden : 2 * hidden] == 1) and torch.all(lstm.bias_hh_l0 == 0)
    assert a.patch_classifier.weight.abs().sum() > 0 and a.class_token_fusion.class_tokens.abs().sum() > 0
    # The encoder is initialised by its own family's `_init_weights` (e.g. LayerNorm weight 1, bias 0).
    norms = [m for m in a.vit.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_encoder_layers_and_final_norm_are_found_in_every_family(tester):
    from cpfcte_hf.stage1.schedule import encoder_parameter_groups

    model = tester.create_model(tester.get_config())
    assert len(model.encoder_layers()) == tester.num_hidden_layers
    assert all(isinstance(layer, GradientCheckpointingLayer) for layer in model.encoder_layers())
    assert isinstance(model.encoder_final_norm(), torch.nn.LayerNorm)
    frozen, trained = encoder_parameter_groups(model, 1)
    trained_ids = {id(p) for p in trained}
    last = {id(p) for p in model.encoder_layers()[-1].parameters()}
    norm = {id(p) for p in model.encoder_final_norm().parameters()}
    assert trained_ids == last | norm
    assert len(frozen) + len(trained) == len(list(model.vit.parameters()))


def test_torch_export(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    pixel_values = inputs["pixel_values"]
    exported = torch.export.export(model, args=(pixel_values,), strict=False)
    with torch.no_grad():
        expected = model(pixel_values)
        actual = exported.module()(pixel_values)
    torch.testing.assert_close(actual["logits"], expected.logits)
    torch.testing.assert_close(actual["image_scores"], expected.image_scores)


def test_config_round_trip_keeps_the_backbone_family(tester, tmp_path):
    config = tester.get_config()
    config.save_pretrained(tmp_path)
    reloaded = CPFCTEConfig.from_pretrained(tmp_path)
    assert reloaded.backbone_config.model_type == tester.model_type
    assert reloaded.to_dict() == config.to_dict()
    assert CPFCTEConfig.from_dict(copy.deepcopy(config.to_dict())).to_dict() == config.to_dict()


# --- transformers' gradient-checkpointing tests, for CPF-CTE (every family) and DeepLab-v2 -----------------------
# transformers runs `test_gradient_checkpointing_enable_disable` and `test_training_gradient_checkpointing` (default,
# use_reentrant=False, use_reentrant=True) on each of its models; the same contracts, for this package's two models.


class DeepLabV2ModelTester:
    """A tiny DeepLab-v2 (4 one-block ResNet stages, 8 to 32 channels) and a batch of pixel labels."""

    def __init__(self, batch_size: int = 2, num_labels: int = 3, image_size: int = 33):
        self.batch_size, self.num_labels, self.image_size = batch_size, num_labels, image_size

    def prepare_config_and_inputs(self):
        from tests.deeplab_helpers import tiny_deeplab_config

        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        labels = torch.randint(0, self.num_labels, (self.batch_size, self.image_size, self.image_size))
        return tiny_deeplab_config(self.num_labels), {"pixel_values": pixel_values, "labels": labels}

    def create_model(self, config, seed: int = 0):
        from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation

        torch.manual_seed(seed)
        return DeepLabV2ForSemanticSegmentation(config)


@pytest.fixture(params=[*FAMILIES, "deeplab_v2"])
def any_tester(request):
    return DeepLabV2ModelTester() if request.param == "deeplab_v2" else CPFCTEModelTester(request.param)


def _checkpointing_flags(model) -> set[bool]:
    return {m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing")}


def test_gradient_checkpointing_enable_disable(any_tester):
    config, _ = any_tester.prepare_config_and_inputs()
    model = any_tester.create_model(copy.deepcopy(config))
    assert model.supports_gradient_checkpointing and not model.is_activation_checkpointing
    assert any(isinstance(m, GradientCheckpointingLayer) for m in model.modules())
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and _checkpointing_flags(model) == {True}
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing and _checkpointing_flags(model) == {False}
    with pytest.warns(FutureWarning):  # the names transformers' own test calls (deprecated aliases in v5)
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing and _checkpointing_flags(model) == {True}
        model.gradient_checkpointing_disable()
        assert not model.is_gradient_checkpointing


def _backward(model, inputs) -> dict[str, torch.Tensor]:
    torch.manual_seed(42)
    model(**inputs).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kwargs", [None, {"use_reentrant": False}, {"use_reentrant": True}])
def test_training_gradient_checkpointing(any_tester, kwargs):
    """One plain backward, then one with checkpointing: the first checkpointed layer's forward runs again in the
    backward, every parameter gets a gradient, and the gradients are the plain ones."""
    config, inputs = any_tester.prepare_config_and_inputs()
    model = any_tester.create_model(config).train()
    for parameter in model.parameters():  # frozen parts too (DeepLab's BatchNorm), as transformers' test does
        parameter.requires_grad_(True)
    plain = _backward(model, inputs)
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    layer = next(m for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    calls = []
    layer.register_forward_pre_hook(lambda *args: calls.append(1))  # outside the checkpoint: once per forward
    inner = next(m for m in layer.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    inner.register_forward_pre_hook(lambda *args: calls.append(2))  # inside: again when the backward recomputes
    checkpointed = _backward(model, inputs)
    assert calls == [1, 2, 2]
    # DINOv2's mask token only replaces patches in masked-image pre-training: no gradient, with or without.
    assert set(plain) == set(checkpointed) and {n for n, _ in model.named_parameters()} - set(plain) <= {
        "vit.embeddings.mask_token"
    }
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
