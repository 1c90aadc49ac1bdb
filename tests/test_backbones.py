"""CPF-CTE on any ViT-family encoder: loading pretrained encoders bit for bit, remote code, old checkpoints, errors.

Each family is tested offline with a tiny random encoder saved to a temporary folder, as a Hub checkpoint would be.
"""

import json
import subprocess

import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    CLIPConfig,
    CLIPModel,
    DeiTForImageClassification,
    Dinov2ForImageClassification,
    SiglipConfig,
    SiglipModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation
from tests.test_modeling_common import FAMILIES, tiny_backbone_config
from tests.utils import BLOCK_PACKAGE_IMPORT, PYTHON, subprocess_env, tiny_config


ID2LABEL = {0: "background", 1: "cat", 2: "dog"}


def _save_encoder(directory, model_type: str, seed: int = 1):
    """A tiny random bare encoder (`AutoModel`) of `model_type`, saved like a Hub checkpoint; returns it."""
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(tiny_backbone_config(model_type))
    # Random non-trivial values everywhere (LayerNorms and tokens too), so that a skipped weight would show.
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_()
    encoder.save_pretrained(directory)
    return encoder


def _assert_encoder_loaded(model, source_state: dict):
    target_state = model.vit.state_dict()
    assert set(target_state) <= set(source_state), set(target_state) - set(source_state)
    for name, tensor in target_state.items():
        assert torch.equal(tensor, source_state[name]), name


@pytest.mark.parametrize("model_type", FAMILIES)
def test_from_pretrained_backbone_loads_the_encoder_bit_identically(tmp_path, model_type):
    encoder = _save_encoder(tmp_path / "encoder", model_type)
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
        str(tmp_path / "encoder"), id2label=ID2LABEL, lstm_hidden_size=8
    )
    assert model.config.backbone_config.model_type == model_type
    assert model.config.id2label == ID2LABEL
    _assert_encoder_loaded(model, encoder.state_dict())
    # The heads are freshly initialised as configured, not left at zero.
    assert model.patch_classifier.weight.shape == (3, 32) and model.patch_classifier.weight.abs().sum() > 0
    assert model.class_token_fusion.class_tokens.abs().sum() > 0

    # It runs, and saves and reloads as a CPF-CTE checkpoint of the same family.
    pixel_values = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values).logits
    model.save_pretrained(tmp_path / "cpfcte")
    saved = json.loads((tmp_path / "cpfcte" / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == model_type
    reloaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path / "cpfcte").eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    with torch.no_grad():
        # Same weights; a loaded tensor's memory layout may pick another matmul kernel (last-bit differences).
        torch.testing.assert_close(reloaded(pixel_values).logits, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "model_class,prefix",
    [
        (ViTForImageClassification, "vit"),
        (DeiTForImageClassification, "deit"),
        (Dinov2ForImageClassification, "dinov2"),
    ],
)
def test_from_pretrained_backbone_drops_an_image_classification_head(tmp_path, model_class, prefix):
    model_type = {"vit": "vit", "deit": "deit", "dinov2": "dinov2"}[prefix]
    torch.manual_seed(2)
    classifier = model_class(tiny_backbone_config(model_type, num_labels=10))
    classifier.save_pretrained(tmp_path / "classifier")
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
        str(tmp_path / "classifier"), id2label=ID2LABEL
    )
    assert model.config.backbone_config.num_labels == 2 and model.config.backbone_config.architectures is None
    _assert_encoder_loaded(model, getattr(classifier, prefix).state_dict())


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_from_pretrained_backbone_takes_the_vision_tower_of_a_two_tower_checkpoint(tmp_path, model_type):
    vision = tiny_backbone_config(f"{model_type}_vision_model").to_dict()
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    torch.manual_seed(3)
    if model_type == "clip":
        full = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    else:
        full = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
    full.save_pretrained(tmp_path / "two-tower")
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(str(tmp_path / "two-tower"))
    assert model.config.backbone_config.model_type == f"{model_type}_vision_model"
    tower_state = {k[len("vision_model.") :]: v for k, v in full.state_dict().items() if k.startswith("vision_model.")}
    _assert_encoder_loaded(model, tower_state)
    if model_type == "siglip":
        # The attention-pooling head makes an image embedding CPF-CTE does not use: left out.
        assert model.config.backbone_config.vision_use_head is False
        assert not any(name.startswith("head.") for name in model.vit.state_dict())


def test_from_pretrained_backbone_with_attn_implementation(tmp_path):
    _save_encoder(tmp_path / "encoder", "dinov2")
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
        str(tmp_path / "encoder"), attn_implementation="eager"
    )
    assert model.vit.config._attn_implementation == "eager"


def test_remote_code_loads_every_family_without_the_package(tmp_path):
    pixel_values = torch.randn(1, 3, 32, 32)
    torch.save(pixel_values, tmp_path / "input.pt")
    expected = {}
    for model_type in FAMILIES:
        torch.manual_seed(0)
        model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(backbone_config=tiny_backbone_config(model_type)))
        model.eval().save_pretrained(tmp_path / model_type)
        with torch.no_grad():
            expected[model_type] = model(pixel_values).logits
    code = (
        BLOCK_PACKAGE_IMPORT
        + f"""
import torch
from transformers import AutoModelForSemanticSegmentation
pixel_values = torch.load({str(tmp_path / "input.pt")!r})
for model_type in {FAMILIES!r}:
    model = AutoModelForSemanticSegmentation.from_pretrained(
        {str(tmp_path)!r} + "/" + model_type, trust_remote_code=True
    ).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        torch.save(model(pixel_values).logits, {str(tmp_path)!r} + "/" + model_type + ".pt")
print("REMOTE_OK")
"""
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout
    for model_type in FAMILIES:
        assert torch.equal(torch.load(tmp_path / f"{model_type}.pt"), expected[model_type]), model_type


# --- old checkpoints and configs ------------------------------------------------------------------------------------


def test_vit_state_dict_keys_are_those_of_the_vit_only_versions():
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    expected = {f"vit.{key}" for key in ViTModel(model.config.backbone_config, add_pooling_layer=False).state_dict()}
    encoder_keys = {key for key in model.state_dict() if key.startswith("vit.")}
    assert encoder_keys == expected
    assert CPFCTEForWeaklySupervisedSegmentation.base_model_prefix == "vit"


def test_an_old_config_without_backbone_model_type_is_a_vit(tmp_path):
    config = tiny_config()
    values = config.to_dict()
    values["backbone_config"].pop("model_type")
    (tmp_path / "config.json").write_text(json.dumps(values))
    loaded = CPFCTEConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.backbone_config, ViTConfig) and loaded.backbone_config.hidden_size == 32


def test_hidden_size_and_patch_size_are_routed_to_the_backbone():
    config = CPFCTEConfig(hidden_size=64, patch_size=8, num_labels=3)
    assert config.hidden_size == 64 and config.backbone_config.hidden_size == 64
    assert config.patch_size == 8 and config.backbone_config.patch_size == 8
    dinov2 = CPFCTEConfig(backbone_config=tiny_backbone_config("dinov2"), patch_size=16)
    assert dinov2.backbone_config.patch_size == 16 and dinov2.patch_size == 16


def test_loading_an_encoder_checkpoint_as_cpfcte_points_to_from_pretrained_backbone(tmp_path):
    ViTModel(tiny_backbone_config("vit")).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match=r"'vit' config, not a CPF-CTE.*from_pretrained_backbone"):
        CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="from_pretrained_backbone"):
        CPFCTEConfig.from_pretrained(tmp_path / "vit")


def test_an_unsupported_backbone_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"model_type 'bert'.*vit, deit, dinov2"):
        CPFCTEConfig(backbone_config=BertConfig())
    with pytest.raises(ValueError, match=r"model_type 'swin'"):
        CPFCTEConfig(backbone_config={"model_type": "swin"})


def test_a_checkpoint_without_encoder_weights_is_refused(tmp_path):
    # A config of a supported family, but weights of something else: nothing would load.
    tiny_backbone_config("dinov2").save_pretrained(tmp_path / "empty")
    torch.save({}, tmp_path / "empty" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"empty lacks encoder weights"):
        CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(str(tmp_path / "empty"))


def test_processor_for_backbone_normalises_as_the_encoder_was_pretrained(tmp_path):
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from cpfcte_hf import CPFCTEImageProcessor

    _save_encoder(tmp_path / "dinov2", "dinov2")
    # What facebook/dinov2-* ship: ImageNet statistics (written here by a processor with those values).
    CPFCTEImageProcessor(image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD)).save_pretrained(
        tmp_path / "dinov2"
    )
    processor = CPFCTEImageProcessor.for_backbone(str(tmp_path / "dinov2"), size={"height": 28, "width": 28})
    assert list(processor.image_mean) == list(IMAGENET_DEFAULT_MEAN)
    assert list(processor.image_std) == list(IMAGENET_DEFAULT_STD)
    assert processor.size["height"] == 28
    # No preprocessor_config.json: ViT-PCM's 0.5 / 0.5.
    _save_encoder(tmp_path / "bare", "vit")
    assert list(CPFCTEImageProcessor.for_backbone(str(tmp_path / "bare")).image_mean) == [0.5, 0.5, 0.5]


def test_voc_dinov2_preset_is_voc_with_a_dinov2_encoder():
    import dataclasses

    from cpfcte_hf.stage1.train import DataArguments, ModelArguments
    from cpfcte_hf.stage1.trainer import CPFCTETrainingArguments
    from cpfcte_hf.utils.arguments import load_preset

    voc, dinov2 = load_preset("voc"), load_preset("voc-dinov2")  # packaged presets, `base: voc` expanded
    assert set(voc) == set(dinov2)
    assert {key for key in voc if voc[key] != dinov2[key]} == {"backbone", "image_size", "output_dir"}
    assert dinov2["backbone"] == "facebook/dinov2-base" and dinov2["image_size"] % 14 == 0
    fields = {
        f.name for cls in (ModelArguments, DataArguments, CPFCTETrainingArguments) for f in dataclasses.fields(cls)
    }
    assert set(dinov2) - {"label", "train_deeplab"} <= fields


def test_benchmark_configs_cover_every_family_on_one_patch_grid():
    from cpfcte_hf.benchmarks.common import BENCHMARK_BACKBONES, benchmark_backbone_config, time_call, time_interleaved

    assert {model_type for model_type, _ in BENCHMARK_BACKBONES.values()} == set(FAMILIES)
    for name in BENCHMARK_BACKBONES:
        backbone_config = benchmark_backbone_config(name, "s", grid=14)
        config = CPFCTEConfig(backbone_config=backbone_config)
        assert config.hidden_size == 384 and backbone_config.num_hidden_layers == 12
        assert backbone_config.image_size == 14 * config.patch_size
    order = []
    times = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, torch.device("cpu"), repeats=3, warmup=1
    )
    # one warm-up call each, then rounds that alternate the order (compare_interleaved's loop)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"] and len(times["a"]["times_s"]) == 3
    assert set(times) == {"a", "b"} and {"median_s", "min_s", "times_s"} <= set(times["a"])
    calls = []
    timing = time_call(lambda: calls.append(1), torch.device("cpu"), steps=4, warmup=2)
    assert len(calls) == 6 and set(timing) == {"median_s", "mean_s", "min_s", "steps"} and timing["steps"] == 4


def test_saved_vit_keys_are_the_legacy_ones_vit_model_writes(tmp_path):
    from safetensors import safe_open

    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    model.save_pretrained(tmp_path / "cpfcte")
    ViTModel(model.config.backbone_config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    with (
        safe_open(tmp_path / "cpfcte" / "model.safetensors", "pt") as ours,
        safe_open(tmp_path / "vit" / "model.safetensors", "pt") as vit,
    ):
        ours_keys = {key for key in ours.keys() if key.startswith("vit.")}
        assert ours_keys == {f"vit.{key}" for key in vit.keys()}
    assert any(".attention.attention.query." in key for key in ours_keys)  # the legacy names, as before


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_training_builds_any_family_with_the_public_attention_switch(tmp_path, attn_implementation):
    from cpfcte_hf.stage1.train import ModelArguments, build_model

    encoder = _save_encoder(tmp_path / "encoder", "dinov2_with_registers")
    classes = ["background", "disc", "ring"]
    model = build_model(
        ModelArguments(backbone=str(tmp_path / "encoder"), attn_implementation=attn_implementation), classes
    )
    assert model.config.backbone_config.model_type == "dinov2_with_registers"
    assert model.vit.config._attn_implementation == attn_implementation
    assert model.config.lstm_hidden_size == 32 // 4
    _assert_encoder_loaded(model, encoder.state_dict())
    scratch = build_model(
        ModelArguments(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, attn_implementation=attn_implementation,
        ),
        classes,
    )  # fmt: skip
    assert scratch.vit.config._attn_implementation == attn_implementation
