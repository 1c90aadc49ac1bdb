"""DeepLab-v2 (stage 2): shapes, dilation, loss and ignore index, frozen BatchNorm, config, backbone initialisation."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ResNetForImageClassification, ResNetModel
from transformers.modeling_layers import GradientCheckpointingLayer

import cpfcte_hf
from cpfcte_hf.deeplab import (
    AtrousSpatialPyramidClassifier,
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    configuration_deeplab,
    dilate_resnet,
    resnet101_config,
)
from cpfcte_hf.models.cpfcte import class_names
from cpfcte_hf.models.deeplab_v2 import processing
from cpfcte_hf.models.deeplab_v2.modeling_deeplab import DeepLabV2ResNetLayer
from cpfcte_hf.stage2 import arguments as stage2_arguments
from tests.deeplab_helpers import tiny_deeplab_config, tiny_resnet_config


@pytest.mark.parametrize(
    "output_stride, size, expected", [(8, 65, 9), (8, 33, 5), (8, 64, 8), (16, 65, 5), (32, 65, 3)]
)
def test_logits_have_the_configured_output_stride(output_stride, size, expected):
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config(output_stride=output_stride)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size + 8)).logits
    expected_width = {8: -(-(size + 8) // 8), 16: -(-(size + 8) // 16), 32: -(-(size + 8) // 32)}[output_stride]
    assert logits.shape == (2, 3, expected, expected_width)


def test_last_two_stages_are_dilated_2_and_4_and_keep_their_resolution():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    assert model.backbone_dilations == [1, 1, 2, 4]
    for stage, dilation in zip(model.resnet.encoder.stages, [1, 1, 2, 4]):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            if conv.kernel_size == (3, 3):
                assert conv.dilation == (dilation, dilation) and conv.padding == (dilation, dilation)
            if dilation > 1:
                assert conv.stride == (1, 1)
    with torch.no_grad():
        hidden = model.resnet(torch.randn(1, 3, 64, 64), output_hidden_states=True).hidden_states
    assert [h.shape[-1] for h in hidden] == [16, 16, 8, 8, 8]


def test_output_stride_32_is_the_plain_resnet():
    """With nothing dilated, the backbone computes exactly transformers' ResNetModel."""
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config(output_stride=32)).eval()
    plain = ResNetModel(tiny_resnet_config()).eval()
    plain.load_state_dict(model.resnet.state_dict())
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.resnet(pixel_values).last_hidden_state, plain(pixel_values).last_hidden_state)


def test_aspp_sums_its_atrous_branches():
    aspp = AtrousSpatialPyramidClassifier(in_channels=4, num_labels=3, atrous_rates=[1, 2, 3])
    features = torch.randn(1, 4, 9, 9)
    expected = sum(
        F.conv2d(features, branch.weight, branch.bias, padding=rate, dilation=rate)
        for branch, rate in zip(aspp.branches, [1, 2, 3])
    )
    assert [b.dilation for b in aspp.branches] == [(1, 1), (2, 2), (3, 3)]
    torch.testing.assert_close(aspp(features), expected)


def test_loss_is_cross_entropy_of_upsampled_logits():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    pixel_values = torch.randn(2, 3, 33, 33)
    labels = torch.randint(0, 3, (2, 33, 33))
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels)
    upsampled = F.interpolate(outputs.logits, size=(33, 33), mode="bilinear", align_corners=True)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(upsampled, labels))


def test_ignore_index_pixels_do_not_count():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    pixel_values = torch.randn(1, 3, 33, 33)
    labels = torch.randint(0, 3, (1, 33, 33))
    labels[:, :, 20:] = 255
    other = labels.clone()
    other[:, :, 20:] = 255
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels)
        upsampled = F.interpolate(outputs.logits, size=(33, 33), mode="bilinear", align_corners=True)
    # Mean over the labelled pixels only.
    by_hand = F.cross_entropy(upsampled[..., :20], labels[..., :20])
    torch.testing.assert_close(outputs.loss, by_hand)
    # Fully ignored labels: a zero loss that still backpropagates, not NaN.
    model.train()
    loss = model(pixel_values, labels=torch.full((1, 33, 33), 255)).loss
    assert loss.item() == 0.0
    loss.backward()


def test_bad_labels_and_inputs_raise_clear_errors():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    pixel_values = torch.randn(1, 3, 33, 33)
    with pytest.raises(ValueError, match=r"class ids 3\.\.3; expected 0\.\.2 or 255"):
        model(pixel_values, labels=torch.full((1, 33, 33), 3))
    with pytest.raises(ValueError, match="shape \\(batch_size, height, width\\)"):
        model(pixel_values, labels=torch.zeros(1, 3, 33, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(pixel_values, labels=torch.zeros(1, 33, 33))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 4, 33, 33))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        model(torch.randn(3, 33, 33))


def test_return_dict_false_and_hidden_states():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    pixel_values, labels = torch.randn(1, 3, 33, 33), torch.randint(0, 3, (1, 33, 33))
    with torch.no_grad():
        loss, logits = model(pixel_values, labels=labels, return_dict=False)
        outputs = model(pixel_values, output_hidden_states=True)
    torch.testing.assert_close(logits, outputs.logits)
    assert loss.ndim == 0
    assert len(outputs.hidden_states) == 5 and outputs.hidden_states[-1].shape[1] == 32


def test_batch_norm_stays_frozen_in_training_mode():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).train()
    batch_norms = [m for m in model.resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and all(not m.training for m in batch_norms)
    assert all(not p.requires_grad for m in batch_norms for p in m.parameters())
    before = [m.running_mean.clone() for m in batch_norms]
    model(torch.randn(2, 3, 33, 33), labels=torch.randint(0, 3, (2, 33, 33))).loss.backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, batch_norms))
    assert model.aspp.branches[0].weight.grad is not None
    assert model.resnet.embedder.embedder.convolution.weight.grad is not None

    trainable = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config(freeze_batch_norm=False)).train()
    batch_norms = [m for m in trainable.resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training and m.weight.requires_grad for m in batch_norms)


def test_aspp_is_initialised_as_configured():
    config = tiny_deeplab_config(backbone_config=tiny_resnet_config(hidden_sizes=[8, 16, 16, 256]))
    model = DeepLabV2ForSemanticSegmentation(config)
    weights = torch.cat([b.weight.flatten() for b in model.aspp.branches])
    assert abs(weights.std().item() - 0.01) < 0.001
    assert all(torch.count_nonzero(b.bias) == 0 for b in model.aspp.branches)


def test_config_defaults_follow_the_spec():
    config = DeepLabV2Config()
    assert config.atrous_rates == [6, 12, 18, 24]
    assert config.output_stride == 8
    assert config.semantic_loss_ignore_index == 255
    assert config.num_labels == 21 and config.id2label[0] == "background" and config.id2label[20] == "tvmonitor"
    assert config.backbone_config.depths == [3, 4, 23, 3] and config.backbone_config.layer_type == "bottleneck"
    assert config.backbone_config.to_dict() == resnet101_config().to_dict()
    # The remote-code copy of the class names must not drift from the package's.
    assert configuration_deeplab.VOC_CLASSES == cpfcte_hf.VOC_CLASSES == class_names.VOC_CLASSES
    # The stage-2 options keep the processor's default size without importing transformers: the copies agree.
    assert stage2_arguments.DEEPLAB_IMAGE_SIZE == processing.DEEPLAB_IMAGE_SIZE


def test_config_validation():
    with pytest.raises(ValueError, match="output_stride"):
        tiny_deeplab_config(output_stride=4)
    with pytest.raises(ValueError, match="atrous_rates"):
        tiny_deeplab_config(atrous_rates=[])
    with pytest.raises(ValueError, match="semantic_loss_ignore_index"):
        tiny_deeplab_config(semantic_loss_ignore_index=1)
    with pytest.raises(ValueError, match="4-stage"):
        tiny_deeplab_config(backbone_config=tiny_resnet_config(hidden_sizes=[8, 16, 32], depths=[1, 1, 1]))
    with pytest.raises(TypeError, match="ResNetConfig"):
        DeepLabV2Config(backbone_config=cpfcte_hf.vit_b16_384_config())
    assert DeepLabV2Config(num_labels=5).id2label[0] == "background"


@pytest.mark.parametrize("checkpoint_class", [ResNetForImageClassification, ResNetModel])
def test_backbone_loads_bit_identical_from_a_resnet_checkpoint(tmp_path, checkpoint_class):
    torch.manual_seed(1)
    resnet_config = tiny_resnet_config(num_labels=10)
    checkpoint = checkpoint_class(resnet_config)
    # Non-trivial BatchNorm statistics, so that buffers are checked too.
    for module in checkpoint.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
    checkpoint.save_pretrained(tmp_path)
    source = checkpoint.resnet if checkpoint_class is ResNetForImageClassification else checkpoint

    id2label = {0: "background", 1: "cat", 2: "dog"}
    model = DeepLabV2ForSemanticSegmentation.from_pretrained_backbone(str(tmp_path), id2label=id2label)

    loaded, expected = model.resnet.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert model.config.num_labels == 3 and model.config.backbone_config.hidden_sizes == [8, 16, 16, 32]
    assert model.config.backbone_config.architectures is None
    assert model.backbone_dilations == [1, 1, 2, 4]
    # The ASPP is freshly initialised (N(0, 0.01), zero bias), not taken from the checkpoint's classifier.
    weights = torch.cat([branch.weight.flatten() for branch in model.aspp.branches])
    assert abs(weights.std().item() - 0.01) < 0.002
    assert all(torch.count_nonzero(branch.bias) == 0 for branch in model.aspp.branches)

    # Same thing with a config passed whole: its backbone_config is replaced by the checkpoint's.
    config = DeepLabV2Config(id2label=id2label, atrous_rates=[1, 2])
    model = DeepLabV2ForSemanticSegmentation.from_pretrained_backbone(str(tmp_path), config=config)
    assert len(model.aspp.branches) == 2 and torch.equal(
        model.resnet.embedder.embedder.convolution.weight, source.embedder.embedder.convolution.weight
    )
    with pytest.raises(ValueError, match="either `config`"):
        DeepLabV2ForSemanticSegmentation.from_pretrained_backbone(str(tmp_path), config=config, atrous_rates=[1])


def test_benchmark_helpers_count_and_time_a_training_step():
    from cpfcte_hf.benchmarks.deeplab_model import count_parameters, time_forward_backward, training_step_flops

    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    counts = count_parameters(model)
    batch_norm = sum(p.numel() for n, p in model.named_parameters() if "normalization" in n)
    assert counts["total"] == counts["backbone"] + counts["classifier"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == counts["total"] - batch_norm
    assert counts["classifier"] == 4 * (32 * 3 * 9 + 3)
    timing = time_forward_backward(model, batch_size=1, size=33, steps=2)
    assert timing["steps"] == 2 and 0 < timing["seconds_min"] <= timing["seconds_median"] <= timing["seconds_max"]
    assert timing["dtype"] == "fp32" and time_forward_backward(model, 1, 33, steps=1, dtype="bf16")["dtype"] == "bf16"
    with pytest.raises(ValueError, match="`dtype` must be fp32 or bf16"):
        time_forward_backward(model, 1, 33, steps=1, dtype="fp16")
    # The ASPP alone: 4 branches x 2 flops x (32 x 9) x 3 outputs x 5 x 5 positions, forward; backward adds about 2x.
    assert training_step_flops(model, batch_size=1, size=33) > 3 * 4 * 2 * 32 * 9 * 3 * 25


def test_activation_checkpointing_recomputes_each_residual_block_and_gives_the_same_outputs_and_gradients():
    """transformers' checkpointing on DeepLab-v2: every residual block is a `GradientCheckpointingLayer` (checked for
    every model of transformers' contract in test_modeling_common.py); here the hidden states and the gradients of
    every parameter, checkpointed or not, and a block's convolution running again in the backward."""
    pixel_values = torch.randn(2, 3, 33, 33)
    labels = torch.randint(0, 3, (2, 33, 33))
    grads, conv_calls, hidden = [], [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        calls = []
        block = model.resnet.encoder.stages[2].layers[0]
        assert isinstance(block, DeepLabV2ResNetLayer) and isinstance(block, GradientCheckpointingLayer)
        block.layer[1].convolution.register_forward_pre_hook(lambda *a, calls=calls: calls.append(1))
        outputs = model(pixel_values, labels=labels, output_hidden_states=True)
        outputs.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        conv_calls.append(len(calls))
        hidden.append([h.detach() for h in outputs.hidden_states])
    assert conv_calls == [1, 2]  # the checkpointed block ran again during backward
    assert grads[0].keys() == grads[1].keys() and "aspp.branches.0.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)
    assert len(hidden[0]) == len(hidden[1]) == 5
    for a, b in zip(*hidden):
        torch.testing.assert_close(a, b)
    # In eval mode (no backward to replay) the blocks run once, as without checkpointing.
    model.eval()
    calls.clear()
    with torch.no_grad():
        model(pixel_values)
    assert len(calls) == 1


@pytest.mark.parametrize("layer_type", ["bottleneck", "basic"])
def test_checkpointable_blocks_keep_the_resnet_state_dict_keys(tmp_path, layer_type):
    """The weights of transformers' own `ResNetModel` plus the ASPP, saved under the keys DeepLab-v2 checkpoints have
    always had, load key for key and give the outputs of that ResNet, dilated, followed by the ASPP."""
    from safetensors.torch import save_file

    config = tiny_deeplab_config(backbone_config=tiny_resnet_config(layer_type))
    torch.manual_seed(1)
    resnet = ResNetModel(config.backbone_config).eval()
    model = DeepLabV2ForSemanticSegmentation(config)
    expected_keys = {f"resnet.{key}" for key in resnet.state_dict()} | {
        f"aspp.branches.{i}.{name}" for i in range(4) for name in ("weight", "bias")
    }
    assert set(model.state_dict()) == expected_keys
    aspp = AtrousSpatialPyramidClassifier(32, 3, [1, 2, 3, 4])
    state = {f"resnet.{k}": v for k, v in resnet.state_dict().items()}
    state.update({f"aspp.{k}": v for k, v in aspp.state_dict().items()})
    config.save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = DeepLabV2ForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    dilate_resnet(resnet, 8)
    pixel_values = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(pixel_values).logits, aspp(resnet(pixel_values).last_hidden_state))


def test_bench_deeplab_times_the_stage2_model_of_a_preset_with_train_deeplab_options_on_top(tmp_path, capsys):
    """`cpfcte-hf bench deeplab --config demo` builds the model `train-deeplab --config demo` trains (the shapes
    classes, the preset's crop and batch); train-deeplab options after it change that model; without --config they
    are an error, as is a misspelt one."""
    from cpfcte_hf.benchmarks.deeplab import main

    output = tmp_path / "bench.json"
    options = ["--steps", "1", "--warmup", "0", "--batch_size", "1", "--output", str(output)]
    assert main(["--config", "demo", *options, "--resnet_hidden_sizes", "8", "16", "24", "32"]) == 0
    result = json.loads(output.read_text())
    assert result["architecture"] == {
        "model_type": "deeplab_v2",
        "num_labels": 6,  # background + the 5 shapes of the demo's set
        "depths": [2, 2, 2, 2],  # the demo preset's
        "hidden_sizes": [8, 16, 24, 32],  # the option on top
        "layer_type": "basic",
        "output_stride": 8,
    }
    assert result["size"] == 81 and result["batch_size"] == 1  # the preset's crop; the batch given
    assert result["options"] == ["--resnet_hidden_sizes", "8", "16", "24", "32"]
    assert result["parameters"]["classifier"] == 4 * (32 * 6 * 9 + 6)
    # The precision the preset trains with here (the demo's `bf16: auto`), unless --dtype says otherwise.
    from cpfcte_hf.utils.precision import cpu_bf16_flags

    if not torch.cuda.is_available():
        assert result["dtype"] == ("bf16" if cpu_bf16_flags() else "fp32")
    assert main(["--config", "demo", *options, "--dtype", "fp32"]) == 0
    assert json.loads(output.read_text())["dtype"] == "fp32"
    # Another segmenter's preset: its parameters in all (no DeepLab backbone / ASPP split).
    assert main(["--config", "segformer_shapes", *options]) == 0
    result = json.loads(output.read_text())
    assert result["architecture"] == {"model_type": "segformer", "num_labels": 6}
    assert set(result["parameters"]) == {"total", "trainable"} and result["parameters"]["total"] > 0
    with pytest.raises(SystemExit):
        main(["--resnet_hidden_sizes", "8", "16", "24", "32"])
    assert "train-deeplab options need --config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", "demo", *options, "--resnet_hidden_size", "8"])
    assert "did you mean --resnet_hidden_sizes" in capsys.readouterr().err
