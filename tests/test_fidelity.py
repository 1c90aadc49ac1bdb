"""The switches that choose between the CPF-CTE paper and the reference code (ViT-PCM, vit-keras, Keras)."""

import pytest
import torch
from torch import nn
from transformers import TrainerCallback, ViTModel, default_data_collator

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, TopKPooling
from cpfcte_hf.models.cpfcte.modeling_cpfcte import ContextFusionBiLSTM, resolve_top_k
from cpfcte_hf.stage1.train import ModelArguments, build_model
from tests.test_trainer import TinySegmentationSet, _args
from tests.utils import tiny_config, tiny_vit_config


# --- CF-BiLSTM projection (paper eq. 6) or none (ViT-PCM) -------------------------------------------------------


def test_without_projection_the_classifier_reads_the_lstm_features():
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(context_fusion_projection=False)).eval()
    assert isinstance(model.context_fusion.projection, nn.Identity)
    assert model.patch_classifier.weight.shape == (4, 4 * 8)  # C x 4*lstm_hidden_size, not C x D
    grid = torch.randn(2, 4, 4, 32)
    with torch.no_grad():
        features = model.context_fusion(grid)
        rows, _ = model.context_fusion.row_lstm(grid.reshape(8, 4, 32))
        columns, _ = model.context_fusion.column_lstm(grid.transpose(1, 2).reshape(8, 4, 32))
    expected = torch.cat([rows.reshape(2, 4, 4, -1), columns.reshape(2, 4, 4, -1).transpose(1, 2)], dim=-1)
    torch.testing.assert_close(features, expected)
    outputs = model(torch.randn(2, 3, 32, 32), labels=torch.ones(2, 4))
    assert outputs.logits.shape == (2, 4, 4, 4) and torch.isfinite(outputs.loss)
    # The projection exists, and changes the result, in the default (paper) model.
    projected = CPFCTEForWeaklySupervisedSegmentation(tiny_config()).context_fusion
    assert isinstance(projected.projection, nn.Linear) and projected.output_size == 32


def test_residual_without_projection_needs_matching_sizes():
    with pytest.raises(ValueError, match="4 \\* lstm_hidden_size"):
        tiny_config(context_fusion_projection=False, context_fusion_residual=True, lstm_hidden_size=6)
    config = tiny_config(context_fusion_projection=False, context_fusion_residual=True, lstm_hidden_size=8)
    # 4 * 8 == 32 == D: allowed.
    assert CPFCTEForWeaklySupervisedSegmentation(config).patch_classifier.weight.shape == (4, 32)


# --- Keras LSTM dropout: one mask per sequence, per LSTM and direction -------------------------------------------


def test_per_sequence_lstm_dropout_fixes_one_mask_per_sequence_and_direction():
    torch.manual_seed(0)
    module = ContextFusionBiLSTM(8, 4, dropout=0.5, lstm_dropout_mode="per_sequence").train()
    module.input_dropout = nn.Identity()  # isolate the LSTMs' own dropout
    seen = {}
    module.row_lstm.register_forward_hook(lambda m, i, o: seen.__setitem__("rows", (i[0], o[0])))
    grid = torch.rand(3, 5, 6, 8) + 0.5  # no zeros of its own
    module(grid)
    inputs, outputs = seen["rows"]
    assert inputs.shape == (2 * 15, 6, 8)  # the forward copy and the backward copy of the 15 rows
    kept = inputs != 0
    # The mask is the same at every step of a sequence ...
    assert torch.equal(kept, kept[:, :1].expand_as(kept))
    # ... differs between sequences and between the two directions, and keeps about half the features.
    forward_masks, backward_masks = kept[:15, 0], kept[15:, 0]
    assert not torch.equal(forward_masks, backward_masks)
    assert len({tuple(m.tolist()) for m in forward_masks}) > 1
    assert 0.3 < kept.float().mean() < 0.7
    # Kept features are scaled by 1 / (1 - p), as Keras and nn.Dropout do.
    torch.testing.assert_close(inputs[:15][kept[:15]], (grid.reshape(15, 6, 8) * 2)[kept[:15]])
    # In eval mode: no mask, one copy.
    module.eval()
    module(grid)
    assert seen["rows"][0].shape == (15, 6, 8) and torch.equal(seen["rows"][0], grid.reshape(15, 6, 8))


def test_lstm_dropout_mode_changes_training_only():
    torch.manual_seed(0)
    none = ContextFusionBiLSTM(8, 4, dropout=0.2, lstm_dropout_mode="none")
    keras = ContextFusionBiLSTM(8, 4, dropout=0.2, lstm_dropout_mode="per_sequence")
    keras.load_state_dict(none.state_dict())
    grid = torch.randn(2, 3, 3, 8)
    torch.testing.assert_close(none.eval()(grid), keras.eval()(grid))
    torch.manual_seed(1)
    a = none.train()(grid)
    torch.manual_seed(1)
    b = keras.train()(grid)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="context_fusion_lstm_dropout_mode"):
        tiny_config(context_fusion_lstm_dropout_mode="keras")


# --- K of Top-K as a fraction of the patches ---------------------------------------------------------------------


@pytest.mark.parametrize("grid, expected_k", [(12, 4), (24, 17)])
def test_fractional_top_k_scales_with_the_grid(grid, expected_k):
    probabilities = torch.rand(2, 3, grid * grid)
    pooling = TopKPooling("topk", 0.03)
    assert resolve_top_k(0.03, grid * grid) == expected_k == pooling.num_patches_pooled(grid * grid)
    top = probabilities.sort(-1, descending=True).values[..., :expected_k].mean(-1)
    torch.testing.assert_close(pooling(probabilities), top)
    # An integer K does not scale: 16 on both grids.
    assert TopKPooling("topk", 16).num_patches_pooled(grid * grid) == 16


def test_fractional_top_k_in_the_model_and_its_config(tmp_path):
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(pooling_top_k=0.25)).eval()
    pixel_values = torch.randn(1, 3, 32, 32)  # 4x4 grid: K = 4
    with torch.no_grad():
        outputs = model(pixel_values)
    probabilities = outputs.logits.softmax(1).flatten(2)
    torch.testing.assert_close(outputs.image_scores, probabilities.topk(4, -1).values.mean(-1))
    model.save_pretrained(tmp_path)
    assert CPFCTEConfig.from_pretrained(tmp_path).pooling_top_k == 0.25
    assert resolve_top_k(16.0, 576) == 16 and resolve_top_k(1, 576) == 1
    for bad in (0, -0.5, 2.5, "16", True):
        with pytest.raises(ValueError, match="pooling_top_k"):
            tiny_config(pooling_top_k=bad)


def test_model_arguments_top_k_accepts_a_fraction_or_a_count():
    fraction = build_model(ModelArguments(**_scratch(), top_k=0.03), ["background", "a", "b"])
    count = build_model(ModelArguments(**_scratch(), top_k=16.0), ["background", "a", "b"])
    assert fraction.config.pooling_top_k == 0.03
    assert count.config.pooling_top_k == 16 and isinstance(count.config.pooling_top_k, int)


# --- ViT dropout (vit-keras 0.1) ----------------------------------------------------------------------------------


def _scratch(**overrides):
    values = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        attn_implementation="eager",
    )
    values.update(overrides)
    return values


def _dropout_rates(model):
    return {module.p for module in model.vit.modules() if isinstance(module, nn.Dropout)}


def test_vit_dropout_from_model_arguments_from_scratch_and_from_a_checkpoint(tmp_path):
    classes = ["background", "a", "b"]
    default = build_model(ModelArguments(**_scratch()), classes)
    assert _dropout_rates(default) == {0.0}
    scratch = build_model(ModelArguments(**_scratch(), hidden_dropout_prob=0.1), classes)
    assert _dropout_rates(scratch) == {0.1} and scratch.config.backbone_config.hidden_dropout_prob == 0.1

    ViTModel(tiny_vit_config(hidden_dropout_prob=0.0), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    loaded = build_model(
        ModelArguments(backbone=str(tmp_path / "vit"), hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.05),
        classes,
    )
    assert _dropout_rates(loaded) == {0.1}
    assert {m.attention_dropout for m in loaded.vit.modules() if hasattr(m, "attention_dropout")} == {0.05}
    assert loaded.config.backbone_config.attention_probs_dropout_prob == 0.05
    # It really drops: two training-mode passes differ in the encoder, eval passes do not.
    pixel_values = torch.randn(1, 3, 32, 32)
    loaded.train()
    first, second = loaded.vit(pixel_values).last_hidden_state, loaded.vit(pixel_values).last_hidden_state
    assert not torch.allclose(first, second)
    loaded.eval()
    torch.testing.assert_close(loaded.vit(pixel_values).last_hidden_state, loaded.vit(pixel_values).last_hidden_state)
    with pytest.raises(ValueError, match="hidden_dropout_prob"):
        build_model(ModelArguments(backbone=str(tmp_path / "vit"), hidden_dropout_prob=1.5), classes)


# --- A fresh optimizer per stage (ViT-PCM) -------------------------------------------------------------------------


@pytest.mark.parametrize("fresh, expected_steps", [(True, 2), (False, 4)])
def test_stage2_fresh_optimizer_restarts_adam(tmp_path, fresh, expected_steps):
    from cpfcte_hf.stage1.trainer import CPFCTETrainer

    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(context_fusion_dropout=0.0))
    args = _args(
        tmp_path,
        max_steps=4,
        stage1_steps=2,
        stage2_fresh_optimizer=fresh,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        adam_epsilon=1e-7,
        max_grad_norm=0.0,
    )
    trainer = CPFCTETrainer(
        model=model,
        args=args,
        train_dataset=TinySegmentationSet(8, with_masks=False),
        data_collator=default_data_collator,
    )
    steps = {}

    class RecordAdamSteps(TrainerCallback):
        def on_train_end(self, args, state, control, optimizer=None, **kwargs):
            classifier = trainer.model.patch_classifier.weight
            steps["classifier"] = int(optimizer.state[classifier]["step"])

    trainer.add_callback(RecordAdamSteps())
    trainer.train()
    # The classifier trains in both stages: its Adam step count restarts at stage 2 only with a fresh optimizer.
    assert steps["classifier"] == expected_steps
    assert trainer.optimizer.param_groups[0]["eps"] == 1e-7
