"""Behaviour of CPFCTEForWeaklySupervisedSegmentation and its building blocks."""

import json
import math

import pytest
import torch
from transformers import ViTConfig

from cpfcte_hf import (
    ClassTokenFusion,
    ContextFusionBiLSTM,
    CPFCTEConfig,
    CPFCTEForWeaklySupervisedSegmentation,
    TopKPooling,
)
from tests.utils import tiny_config, tiny_vit_config


def _model(**overrides) -> CPFCTEForWeaklySupervisedSegmentation:
    torch.manual_seed(0)
    return CPFCTEForWeaklySupervisedSegmentation(tiny_config(**overrides))


# --- shapes and sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (64, 64), (32, 56), (80, 40)])
def test_output_shapes_at_any_multiple_of_the_patch_size(size):
    model = _model().eval()
    height, width = size
    out = model(torch.randn(2, 3, height, width))
    assert out.logits.shape == (2, 4, height // 8, width // 8)
    assert out.image_scores.shape == (2, 4)
    assert out.loss is None
    assert torch.all((out.image_scores >= 0) & (out.image_scores <= 1))


@pytest.mark.parametrize("size", [(384, 384), (448, 448), (960, 960), (384, 512)])
def test_vit_b16_sized_inputs(size):
    # The real patch size and width, one encoder layer to keep the test fast.
    config = CPFCTEConfig(backbone_config=ViTConfig(num_hidden_layers=1, image_size=384, patch_size=16))
    model = CPFCTEForWeaklySupervisedSegmentation(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.logits.shape == (1, 21, size[0] // 16, size[1] // 16)


@pytest.mark.parametrize("size", [(33, 32), (32, 31), (4, 4)])
def test_size_not_a_multiple_of_the_patch_raises_a_clear_error(size):
    model = _model().eval()
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]}.*patch size 8"):
        model(torch.randn(1, 3, *size))


def test_wrong_channels_and_rank_raise_clear_errors():
    model = _model().eval()
    with pytest.raises(ValueError, match="4 channels"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        model(torch.randn(3, 32, 32))


def test_without_interpolation_only_the_native_size_is_accepted():
    model = _model(interpolate_pos_encoding=False).eval()
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(torch.randn(1, 3, 48, 48))
    # The per-call argument overrides the config.
    assert model(torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True).logits.shape == (1, 4, 6, 6)


def test_return_dict_false_returns_a_tuple():
    model = _model().eval()
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss, logits, image_scores = model(torch.randn(1, 3, 32, 32), labels=labels, return_dict=False)
    assert loss.ndim == 0 and logits.shape == (1, 4, 4, 4) and image_scores.shape == (1, 4)


# --- the building blocks ----------------------------------------------------------------------------------------


def test_class_token_fusion_depends_on_the_patch_not_a_constant_shift():
    torch.manual_seed(0)
    fusion = ClassTokenFusion(hidden_size=16, num_classes=5).eval()
    torch.nn.init.normal_(fusion.class_tokens, std=1.0)
    patches = torch.randn(1, 6, 16)
    fused, assignment = fusion(patches)
    assert fused.shape == (1, 6, 16) and assignment.shape == (1, 6, 5)
    torch.testing.assert_close(assignment.sum(-1), torch.ones(1, 6))
    # Different patches are assigned differently to the class tokens...
    assert (assignment[0, 0] - assignment[0, 1]).abs().max() > 1e-3
    # ...so the fused output is not "linear part of the patch + the same constant for every patch".
    patch_part = torch.nn.functional.linear(patches, fusion.projection.weight[:, :16])
    class_part = fused - patch_part
    assert (class_part[0, 0] - class_part[0, 1]).abs().max() > 1e-3


def test_class_token_fusion_follows_the_documented_formula():
    torch.manual_seed(0)
    fusion = ClassTokenFusion(hidden_size=8, num_classes=3).eval()
    torch.nn.init.normal_(fusion.class_tokens)
    patches = torch.randn(2, 5, 8)
    fused, assignment = fusion(patches)
    q = fusion.query(patches)
    k = fusion.key(fusion.class_tokens)
    v = fusion.value(fusion.class_tokens)
    expected_assignment = torch.softmax(q @ k.T / math.sqrt(8), dim=-1)
    expected = fusion.projection(torch.cat([patches, expected_assignment @ v], dim=-1))
    torch.testing.assert_close(assignment, expected_assignment)
    torch.testing.assert_close(fused, expected)


def test_context_fusion_carries_information_along_rows_and_columns_only():
    torch.manual_seed(0)
    lstm = ContextFusionBiLSTM(hidden_size=8, lstm_hidden_size=4, dropout=0.0).eval()
    grid = torch.randn(2, 5, 6, 8)
    perturbed = grid.clone()
    row, column = 2, 3
    perturbed[0, row, column] += 5.0
    with torch.no_grad():
        changed = (lstm(grid) - lstm(perturbed)).abs().amax(-1) > 1e-6  # (B, h, w)
    expected = torch.zeros_like(changed)
    expected[0, row, :] = True  # horizontal BiLSTM: the whole row, both directions
    expected[0, :, column] = True  # vertical BiLSTM: the whole column, both directions
    assert torch.equal(changed, expected)

    # And each LSTM on its own: rows feed only the row LSTM's outputs, columns only the column LSTM's.
    hidden = {}
    lstm.row_lstm.register_forward_hook(lambda m, i, o: hidden.__setitem__("rows", o[0]))
    lstm.column_lstm.register_forward_hook(lambda m, i, o: hidden.__setitem__("columns", o[0]))
    with torch.no_grad():
        lstm(grid)
        rows, columns = hidden["rows"].reshape(2, 5, 6, -1), hidden["columns"].reshape(2, 6, 5, -1)
        lstm(perturbed)
        rows_p, columns_p = hidden["rows"].reshape(2, 5, 6, -1), hidden["columns"].reshape(2, 6, 5, -1)
    row_changed = (rows - rows_p).abs().amax(-1) > 1e-6
    column_changed = ((columns - columns_p).abs().amax(-1) > 1e-6).transpose(1, 2)
    assert row_changed[0, row].all() and row_changed.sum() == 6
    assert column_changed[0, :, column].all() and column_changed.sum() == 5


def test_residual_context_fusion_adds_the_projection_to_the_input():
    torch.manual_seed(0)
    plain = ContextFusionBiLSTM(hidden_size=8, lstm_hidden_size=4, dropout=0.0).eval()
    residual = ContextFusionBiLSTM(hidden_size=8, lstm_hidden_size=4, dropout=0.0, residual=True).eval()
    residual.load_state_dict(plain.state_dict())
    grid = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(residual(grid), grid + plain(grid))


def test_context_fusion_runs_one_batched_lstm_call_per_axis():
    model = _model().eval()
    calls = {"rows": 0, "columns": 0}
    model.context_fusion.row_lstm.register_forward_hook(lambda *a: calls.__setitem__("rows", calls["rows"] + 1))
    model.context_fusion.column_lstm.register_forward_hook(
        lambda *a: calls.__setitem__("columns", calls["columns"] + 1)
    )
    model(torch.randn(3, 3, 48, 40))
    assert calls == {"rows": 1, "columns": 1}


def test_top_k_pooling_is_max_at_k1_and_mean_at_all_patches():
    probabilities = torch.rand(3, 4, 20)
    torch.testing.assert_close(TopKPooling("topk", 1)(probabilities), probabilities.amax(-1))
    torch.testing.assert_close(TopKPooling("topk", 20)(probabilities), probabilities.mean(-1))
    torch.testing.assert_close(TopKPooling("topk", 500)(probabilities), probabilities.mean(-1))
    top3 = probabilities.sort(-1, descending=True).values[..., :3].mean(-1)
    torch.testing.assert_close(TopKPooling("topk", 3)(probabilities), top3)
    torch.testing.assert_close(TopKPooling("max")(probabilities), probabilities.amax(-1))
    torch.testing.assert_close(TopKPooling("avg")(probabilities), probabilities.mean(-1))


# --- ablation switches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "switch",
    [
        {"use_class_tokens": False},
        {"use_context_fusion": False},
        {"context_fusion_residual": True},
        {"pooling": "max"},
        {"pooling": "avg"},
        {"pooling_top_k": 5},
    ],
)
def test_each_ablation_switch_changes_the_computation(switch):
    reference = _model().eval()
    ablated = CPFCTEForWeaklySupervisedSegmentation(tiny_config(**switch)).eval()
    # Same weights wherever both models have them, so only the switch differs.
    missing, unexpected = ablated.load_state_dict(reference.state_dict(), strict=False)
    assert not missing
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = reference(pixel_values), ablated(pixel_values)
    if "pooling" in switch or "pooling_top_k" in switch:
        torch.testing.assert_close(a.logits, b.logits)  # same patches, different pooling
        assert not torch.allclose(a.image_scores, b.image_scores)
    else:
        assert unexpected or "context_fusion_residual" in switch  # a disabled module's weights are unused
        assert not torch.allclose(a.logits, b.logits)


def test_disabled_modules_are_absent():
    model = _model(use_class_tokens=False, use_context_fusion=False)
    assert model.class_token_fusion is None and model.context_fusion is None
    assert not any(name.startswith(("class_token_fusion", "context_fusion")) for name, _ in model.named_parameters())


# --- loss and gradients -----------------------------------------------------------------------------------------


def test_loss_equals_a_hand_computation():
    model = _model().eval()
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), labels=labels)
        probabilities = out.logits.softmax(1).flatten(2)  # (B, C, 16)
        k = model.config.pooling_top_k
        scores = probabilities.sort(-1, descending=True).values[..., :k].mean(-1)
        bce = -(labels * scores.log() + (1 - labels) * (1 - scores).log()).mean()
        l2 = 0.01 * (model.patch_classifier.weight**2).sum()
    torch.testing.assert_close(out.image_scores, scores)
    torch.testing.assert_close(out.loss, bce + l2)


def test_loss_is_finite_for_saturated_scores():
    model = _model().eval()
    with torch.no_grad():
        model.patch_classifier.weight.mul_(1e4)  # drives softmax to exact 0/1
        out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([[1.0, 0, 0, 1], [1, 1, 0, 0]]))
    assert torch.isfinite(out.loss)


def test_labels_of_the_wrong_shape_raise_a_clear_error():
    model = _model().eval()
    with pytest.raises(ValueError, match=r"\(batch_size, num_labels\) = \(2, 4\).*\(2, 3\)"):
        model(torch.randn(2, 3, 32, 32), labels=torch.ones(2, 3))


def test_gradients_reach_class_tokens_lstm_and_backbone():
    model = _model().train()
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]]))
    out.loss.backward()
    for name in [
        "class_token_fusion.class_tokens",
        "context_fusion.row_lstm.weight_ih_l0",
        "context_fusion.column_lstm.weight_hh_l0_reverse",
        "patch_classifier.weight",
        "vit.embeddings.patch_embeddings.projection.weight",
        "vit.layers.0.attention.q_proj.weight",
        "vit.layernorm.weight",
    ]:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


# --- initialisation ---------------------------------------------------------------------------------------------


def test_heads_are_initialised_as_configured():
    config = tiny_config(backbone_config=tiny_vit_config(hidden_size=64, intermediate_size=64), num_labels=20)
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(config)
    assert abs(model.patch_classifier.weight.std().item() - 0.05) < 0.01
    assert abs(model.class_token_fusion.class_tokens.std().item() - 0.02) < 0.005
    lstm = model.context_fusion.row_lstm
    hidden = lstm.hidden_size
    assert torch.all(lstm.bias_ih_l0[hidden : 2 * hidden] == 1) and torch.all(lstm.bias_hh_l0 == 0)
    # Orthogonal recurrent kernel (4H x H): orthonormal columns.
    recurrent = lstm.weight_hh_l0.detach()
    torch.testing.assert_close(recurrent.T @ recurrent, torch.eye(hidden), atol=1e-4, rtol=0)


# --- attention implementations and checkpointing ------------------------------------------------------------------


def test_sdpa_by_default_and_eager_only_while_attention_maps_are_requested():
    model = _model().eval()
    assert model.config._attn_implementation == "sdpa"
    assert model.vit.config._attn_implementation == "sdpa"
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 48), output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 2, 1 + 4 * 6, 1 + 4 * 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 25))
    assert len(out.hidden_states) == 3
    assert model.vit.config._attn_implementation == "sdpa"  # restored
    with torch.no_grad():
        sdpa_logits = model(torch.randn(1, 3, 32, 32).fill_(0.3)).logits
        eager_logits = model(torch.randn(1, 3, 32, 32).fill_(0.3), output_attentions=True).logits
    torch.testing.assert_close(sdpa_logits, eager_logits, atol=1e-5, rtol=1e-4)


def test_eager_attention_can_be_chosen_at_load(tmp_path):
    _model().save_pretrained(tmp_path)
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.vit.config._attn_implementation == "eager"


def test_activation_checkpointing_recomputes_the_encoder_and_gives_the_same_gradients():
    config = tiny_config(context_fusion_dropout=0.0, classifier_dropout=0.0)
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    grads, layer_calls = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CPFCTEForWeaklySupervisedSegmentation(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        calls = []
        model.vit.layers[0].attention.q_proj.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        model(pixel_values, labels=labels).loss.backward()
        grads.append(model.vit.layers[0].mlp.fc1.weight.grad.clone())
        layer_calls.append(len(calls))
    assert layer_calls == [1, 2]  # the checkpointed layer ran again during backward
    torch.testing.assert_close(grads[0], grads[1])


# --- config -----------------------------------------------------------------------------------------------------


def test_config_defaults_follow_the_spec():
    config = CPFCTEConfig()
    assert config.num_labels == 21 and config.id2label[0] == "background" and config.id2label[20] == "tvmonitor"
    assert config.backbone_config.hidden_size == 768 and config.patch_size == 16
    assert config.backbone_config.image_size == 384
    assert config.lstm_hidden_size * 4 == config.backbone_config.hidden_size
    assert (config.context_fusion_dropout, config.classifier_dropout) == (0.2, 0.2)
    assert (config.classifier_init_std, config.classifier_l2_weight) == (0.05, 0.01)
    assert config.use_class_tokens and config.use_context_fusion and config.pooling == "topk"
    assert config.interpolate_pos_encoding


def test_config_top_k_alias_and_validation(tmp_path):
    config = CPFCTEConfig(top_k=7)
    assert config.pooling_top_k == 7
    config.save_pretrained(tmp_path)  # `top_k` itself would be refused as a generation parameter
    assert CPFCTEConfig.from_pretrained(tmp_path).pooling_top_k == 7
    with pytest.raises(ValueError, match="pooling"):
        CPFCTEConfig(pooling="median")
    with pytest.raises(ValueError, match="top_k"):
        CPFCTEConfig(top_k=0)
    with pytest.raises(ValueError, match="num_labels"):
        CPFCTEConfig(num_labels=1)


def test_config_from_num_labels_names_background():
    config = CPFCTEConfig(num_labels=6)
    assert config.id2label[0] == "background" and config.label2id["background"] == 0 and config.num_labels == 6


# --- image processor: transformers' conventions ---------------------------------------------------------------------


def test_a_processor_only_folder_loads_with_auto_image_processor(tmp_path, monkeypatch):
    import builtins
    import subprocess

    from transformers import AutoImageProcessor

    from cpfcte_hf import CPFCTEImageProcessor
    from tests.utils import BLOCK_PACKAGE_IMPORT, PYTHON, subprocess_env

    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail(f"transformers prompted: {a}"))
    CPFCTEImageProcessor(size={"height": 48, "width": 64}).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "CPFCTEImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor"}
    processor = AutoImageProcessor.from_pretrained(tmp_path)  # the package's class, no prompt
    assert type(processor) is CPFCTEImageProcessor and processor.size["width"] == 64
    # Without the package: remote code, with trust_remote_code=True.
    code = BLOCK_PACKAGE_IMPORT + (
        "from transformers import AutoImageProcessor\n"
        f"p = AutoImageProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert type(p).__module__.startswith('transformers_modules'), type(p).__module__\n"
        "print('REMOTE_OK', p.size['width'])\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK 64" in result.stdout


def test_image_segmentation_pipeline_never_prompts_when_the_package_is_installed(tmp_path, monkeypatch):
    import builtins

    from PIL import Image
    from transformers import pipeline

    from tests.utils import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path)  # model + processor, both with auto_map (remote code for everyone else)
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail(f"transformers prompted: {a}"))
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    assert type(segmenter.image_processor).__module__ == "cpfcte_hf.models.cpfcte.image_processing_cpfcte"
    assert segmenter(Image.new("RGB", (40, 24), (127, 30, 200)))


def test_do_convert_rgb_false_keeps_the_image_channels():
    import numpy as np
    from PIL import Image

    from cpfcte_hf import CPFCTEImageProcessor

    grey = Image.fromarray(np.arange(24 * 16, dtype=np.uint8).reshape(24, 16), mode="L")
    converted = CPFCTEImageProcessor(size={"height": 16, "width": 16})(grey, return_tensors="pt").pixel_values
    assert converted.shape == (1, 3, 16, 16)
    processor = CPFCTEImageProcessor(
        size={"height": 16, "width": 16}, do_convert_rgb=False, image_mean=[0.5], image_std=[0.5]
    )
    kept = processor(grey, return_tensors="pt").pixel_values
    assert kept.shape == (1, 1, 16, 16)
    torch.testing.assert_close(kept[:, 0], converted[:, 0])  # same resize and normalisation, one channel
    # Also per call, and a 4-channel image keeps its alpha.
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    four = CPFCTEImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 4, image_std=[0.5] * 4)(
        Image.fromarray(rgba, mode="RGBA"), do_convert_rgb=False, return_tensors="pt"
    ).pixel_values
    torch.testing.assert_close(four[0, 3], torch.from_numpy(rgba[..., 3]).float() / 127.5 - 1)
    with pytest.raises(ValueError, match="one value per channel"):
        CPFCTEImageProcessor(do_convert_rgb=False)(grey, return_tensors="pt")


def test_post_process_returns_segmentation_scores_as_transformers_defines_them():
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

    from cpfcte_hf import CPFCTEImageProcessor

    model = _model().eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 32, 32))
    processor = CPFCTEImageProcessor(size={"height": 32, "width": 32})
    masks = processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30), (10, 12)])
    scored = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(20, 30), (10, 12)], return_segmentation_scores=True
    )
    for mask, result, size in zip(masks, scored, [(20, 30), (10, 12)]):
        assert isinstance(result, SemanticSegmentationPostProcessorOutput)
        assert result.segmentation.shape == size and result.segmentation_scores.shape == (4, *size)
        assert torch.equal(result.segmentation, mask)
        assert torch.equal(result.segmentation_scores.argmax(0), mask)
        torch.testing.assert_close(result.segmentation_scores.sum(0), torch.ones(size))
    # Without target sizes: the patch grid.
    assert processor.post_process_semantic_segmentation(outputs, return_segmentation_scores=True)[0][
        "segmentation_scores"
    ].shape == (4, 4, 4)


def test_config_attention_and_hidden_state_flags_are_honoured():
    config = tiny_config()
    config.output_hidden_states = True
    config.output_attentions = True
    model = CPFCTEForWeaklySupervisedSegmentation(config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 32, 32))
    assert len(outputs.hidden_states) == 3 and len(outputs.attentions) == 2
