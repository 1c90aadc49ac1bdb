"""Checkpoints: save/load, backbone initialisation, Auto classes, pipelines and remote code."""

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    ViTForImageClassification,
    ViTModel,
    pipeline,
)

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, CPFCTEImageProcessor
from tests.utils import (
    BLOCK_PACKAGE_IMPORT,
    PYTHON,
    save_tiny_checkpoint,
    subprocess_env,
    tiny_config,
    tiny_vit_config,
)


@pytest.fixture
def checkpoint(tmp_path):
    directory = tmp_path / "tiny-cpfcte"
    model, processor = save_tiny_checkpoint(directory)
    return directory, model, processor


def test_save_and_load_round_trip_gives_identical_outputs(checkpoint):
    directory, model, _ = checkpoint
    reloaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(directory).eval()
    pixel_values = torch.randn(2, 3, 40, 32)
    with torch.no_grad():
        a, b = model(pixel_values), reloaded(pixel_values)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.image_scores, b.image_scores)
    assert reloaded.config.to_dict()["pooling_top_k"] == model.config.pooling_top_k


def test_saved_files_carry_auto_map_and_source_files(checkpoint):
    directory, _, _ = checkpoint
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert {"configuration_cpfcte.py", "modeling_cpfcte.py", "image_processing_cpfcte.py"} <= names
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_cpfcte.CPFCTEConfig",
        "AutoModel": "modeling_cpfcte.CPFCTEForWeaklySupervisedSegmentation",
        "AutoModelForSemanticSegmentation": "modeling_cpfcte.CPFCTEForWeaklySupervisedSegmentation",
        "AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor",
    }


def test_auto_classes_resolve_to_the_package_classes(checkpoint, no_prompt):
    directory, _, _ = checkpoint
    assert isinstance(AutoConfig.from_pretrained(directory), CPFCTEConfig)
    assert type(AutoModel.from_pretrained(directory)) is CPFCTEForWeaklySupervisedSegmentation
    assert type(AutoModelForSemanticSegmentation.from_pretrained(directory)) is CPFCTEForWeaklySupervisedSegmentation
    processor = AutoImageProcessor.from_pretrained(directory)
    assert type(processor) is CPFCTEImageProcessor and processor.size["height"] == 32


def test_image_segmentation_pipeline_returns_the_standard_format(checkpoint, no_prompt):
    directory, model, processor = checkpoint
    segmenter = pipeline("image-segmentation", model=str(directory))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results, "at least one class is predicted somewhere"
    names = set(model.config.id2label.values())
    union = np.zeros((50, 70), dtype=int)
    for result in results:
        assert set(result) == {"score", "label", "mask"}
        assert result["label"] in names
        assert result["mask"].mode == "L" and result["mask"].size == (70, 50)
        union += np.asarray(result["mask"]) > 0
    assert np.all(union == 1)  # the masks partition the image
    # Same mask as the processor + model by hand.
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[(50, 70)])[0]
    with torch.no_grad():
        image_scores = model(**inputs).image_scores[0]
    for result in results:
        class_id = model.config.label2id[result["label"]]
        assert np.array_equal(np.asarray(result["mask"]) > 0, expected.numpy() == class_id)
        # transformers gives semantic segmentation no score; ours is the class's image-level (Top-K pooled) score
        assert result["score"] == pytest.approx(float(image_scores[class_id]), abs=1e-4)


def test_remote_code_load_without_the_package(checkpoint):
    directory, model, _ = checkpoint
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values).logits
    torch.save(pixel_values, directory.parent / "input.pt")
    code = (
        BLOCK_PACKAGE_IMPORT
        + f"""
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoModelForSemanticSegmentation, pipeline
model = AutoModelForSemanticSegmentation.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == "CPFCTEForWeaklySupervisedSegmentation"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True)) is type(model)
with torch.no_grad():
    logits = model(torch.load({str(directory.parent / "input.pt")!r})).logits
torch.save(logits, {str(directory.parent / "output.pt")!r})
segmenter = pipeline("image-segmentation", model={str(directory)!r}, trust_remote_code=True)
assert type(segmenter.image_processor).__module__.startswith("transformers_modules")
results = segmenter(Image.fromarray(np.full((24, 40, 3), 127, dtype=np.uint8)))
assert results and all(r["mask"].size == (40, 24) for r in results)
print("REMOTE_OK", len(results))
"""
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=directory.parent, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout
    assert torch.equal(torch.load(directory.parent / "output.pt"), expected)


# --- backbone initialisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint_class", [ViTModel, ViTForImageClassification])
def test_backbone_only_initialisation_from_a_vit_checkpoint(tmp_path, checkpoint_class):
    torch.manual_seed(1)
    vit_config = tiny_vit_config(num_labels=10)
    vit = checkpoint_class(vit_config) if checkpoint_class is ViTForImageClassification else ViTModel(vit_config)
    vit.save_pretrained(tmp_path / "vit")
    source = vit.vit if checkpoint_class is ViTForImageClassification else vit

    id2label = {0: "background", 1: "cat", 2: "dog"}
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(
        str(tmp_path / "vit"), id2label=id2label, pooling_top_k=3
    )
    assert model.config.id2label == id2label and model.config.pooling_top_k == 3
    assert model.config.backbone_config.hidden_size == 32 and model.config.backbone_config.num_labels == 2
    source_state = {k: v for k, v in source.state_dict().items() if not k.startswith("pooler.")}
    target_state = model.vit.state_dict()
    assert set(source_state) == set(target_state)
    for name, tensor in source_state.items():
        assert torch.equal(tensor, target_state[name]), name
    # Heads are freshly initialised: classifier shape follows our labels, not the checkpoint's 10.
    assert model.patch_classifier.weight.shape == (3, 32)
    assert 0.02 < model.patch_classifier.weight.std().item() < 0.08
    assert model.class_token_fusion.class_tokens.abs().sum() > 0

    # And the result saves and reloads as a CPF-CTE checkpoint.
    model.save_pretrained(tmp_path / "cpfcte")
    reloaded = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(tmp_path / "cpfcte")
    assert torch.equal(reloaded.vit.embeddings.position_embeddings, source.embeddings.position_embeddings)


def test_backbone_initialisation_with_an_explicit_config(tmp_path):
    ViTModel(tiny_vit_config()).save_pretrained(tmp_path / "vit")
    config = tiny_config(num_labels=6, use_context_fusion=False)
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(str(tmp_path / "vit"), config=config)
    assert model.config.num_labels == 6 and model.context_fusion is None
    with pytest.raises(ValueError, match="either `config` or config keyword"):
        CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(str(tmp_path / "vit"), config=config, top_k=2)


def test_backbone_initialisation_from_a_missing_directory_names_it(tmp_path):
    with pytest.raises(OSError, match="no-such-vit"):
        CPFCTEForWeaklySupervisedSegmentation.from_pretrained_backbone(str(tmp_path / "no-such-vit"))


# --- image processor ----------------------------------------------------------------------------------------------


def test_image_processor_scales_to_minus_one_one_and_resizes():
    processor = CPFCTEImageProcessor()
    white = Image.new("RGB", (500, 375), (255, 255, 255))
    black = Image.new("RGB", (120, 80), (0, 0, 0))
    pixel_values = processor(images=[white, black], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (2, 3, 384, 384) and pixel_values.dtype == torch.float32
    assert torch.all(pixel_values[0] == 1.0) and torch.all(pixel_values[1] == -1.0)
    custom = CPFCTEImageProcessor(size={"height": 960, "width": 960})
    assert custom(images=white, return_tensors="pt")["pixel_values"].shape == (1, 3, 960, 960)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "I;16"])
def test_image_processor_accepts_any_image_mode(mode):
    image = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    pixel_values = CPFCTEImageProcessor(size={"height": 32, "width": 32})(images=image, return_tensors="pt")[
        "pixel_values"
    ]
    assert pixel_values.shape == (1, 3, 32, 32) and torch.isfinite(pixel_values).all()
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1


def test_post_process_with_image_labels_suppresses_absent_classes(checkpoint):
    _, model, processor = checkpoint
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 32, 32))
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    masks = processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30), (64, 48)], labels=labels)
    assert masks[0].shape == (20, 30) and masks[1].shape == (64, 48)
    assert set(masks[0].unique().tolist()) <= {0, 2}
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30)])
