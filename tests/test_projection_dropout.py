"""The dropout on [h; v] before the projection (eq. 6) is a field of its own; checkpoints without it load unchanged."""

import json

import torch

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.cli.commands import train as train_command
from cpfcte_hf.stage1.train import build_model

from .utils import tiny_config


def test_unset_is_the_context_fusion_dropout_and_old_checkpoints_load_unchanged(tmp_path):
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(context_fusion_dropout=0.3))
    assert model.context_fusion.output_dropout.p == 0.3  # today's behaviour
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("context_fusion_projection_dropout")  # a checkpoint saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path)
    assert loaded.config.context_fusion_projection_dropout is None
    assert loaded.context_fusion.output_dropout.p == 0.3 and loaded.context_fusion.input_dropout.p == 0.3


def test_the_reference_turns_it_off_and_the_input_dropout_stays():
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(context_fusion_projection_dropout=0.0)).train()
    assert model.context_fusion.output_dropout.p == 0.0 and model.context_fusion.input_dropout.p == 0.2
    features = torch.randn(2, 4, 4, 32)
    torch.manual_seed(1)
    first = model.context_fusion(features)
    # Only the input dropout is random now: with it at 0 too, two training-mode passes agree.
    model.context_fusion.input_dropout.p = 0.0
    torch.testing.assert_close(model.context_fusion(features), model.context_fusion(features))
    assert first.shape == (2, 4, 4, 32)
    try:
        CPFCTEConfig(context_fusion_projection_dropout=1.0)
    except ValueError as error:
        assert "context_fusion_projection_dropout" in str(error)
    else:
        raise AssertionError("a rate of 1.0 was accepted")


def test_the_training_option_reaches_the_model():
    model_args, _, _ = train_command.parse_arguments(
        ["--config", "shapes", "--context_fusion_projection_dropout", "0", "--hidden_size", "32",
         "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "32"]
    )  # fmt: skip
    model = build_model(model_args, ["background", "a", "b"])
    assert model.config.context_fusion_projection_dropout == 0.0 and model.context_fusion.output_dropout.p == 0.0
