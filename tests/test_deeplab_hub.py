"""DeepLab-v2 checkpoints: save/load, Auto classes, the image-segmentation pipeline, and remote code."""

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation, pipeline

from cpfcte_hf import CPFCTEImageProcessor, resize_and_normalize
from cpfcte_hf.deeplab import IMAGENET_MEAN, IMAGENET_STD, DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from tests.deeplab_helpers import save_tiny_deeplab
from tests.utils import BLOCK_PACKAGE_IMPORT, PYTHON, subprocess_env


@pytest.fixture
def checkpoint(tmp_path):
    directory = tmp_path / "tiny-deeplab"
    model, processor = save_tiny_deeplab(directory)
    return directory, model, processor


def test_save_and_load_round_trip_gives_identical_outputs(checkpoint):
    directory, model, _ = checkpoint
    reloaded = DeepLabV2ForSemanticSegmentation.from_pretrained(directory).eval()
    pixel_values = torch.randn(2, 3, 41, 33)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, reloaded(pixel_values).logits)
    assert reloaded.config.atrous_rates == [1, 2, 3, 4]
    assert reloaded.config.backbone_config.hidden_sizes == [8, 16, 16, 32]
    assert reloaded.config.id2label == model.config.id2label
    assert reloaded.backbone_dilations == [1, 1, 2, 4]
    # The dilation is rebuilt from the config, and BatchNorm is frozen again after loading.
    reloaded.train()
    assert not any(p.requires_grad for n, p in reloaded.named_parameters() if "normalization" in n)


def test_saved_files_carry_auto_map_and_source_files(checkpoint):
    directory, _, _ = checkpoint
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert {"configuration_deeplab.py", "modeling_deeplab.py", "image_processing_cpfcte.py"} <= names
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "deeplab_v2"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_deeplab.DeepLabV2Config",
        "AutoModel": "modeling_deeplab.DeepLabV2ForSemanticSegmentation",
        "AutoModelForSemanticSegmentation": "modeling_deeplab.DeepLabV2ForSemanticSegmentation",
        "AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor",
    }
    preprocessor = json.loads((directory / "preprocessor_config.json").read_text())
    # Type and auto_map make a processor-only folder loadable (the "run custom code?" prompt is solved at its root).
    assert preprocessor["image_processor_type"] == "CPFCTEImageProcessor"
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_cpfcte.CPFCTEImageProcessor"}
    assert preprocessor["image_mean"] == list(IMAGENET_MEAN) and preprocessor["image_std"] == list(IMAGENET_STD)


def test_auto_classes_resolve_to_the_package_classes(checkpoint, no_prompt):
    directory, _, _ = checkpoint
    assert isinstance(AutoConfig.from_pretrained(directory), DeepLabV2Config)
    assert type(AutoModel.from_pretrained(directory)) is DeepLabV2ForSemanticSegmentation
    assert type(AutoModelForSemanticSegmentation.from_pretrained(directory)) is DeepLabV2ForSemanticSegmentation
    processor = AutoImageProcessor.from_pretrained(directory)
    assert type(processor) is CPFCTEImageProcessor and processor.size["height"] == 33
    assert list(processor.image_mean) == list(IMAGENET_MEAN)


def test_image_processor_normalises_with_imagenet_statistics(checkpoint):
    _, _, processor = checkpoint
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    pixel_values = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
    expected = resize_and_normalize(image, (33, 33), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(pixel_values, expected)


def test_image_segmentation_pipeline_returns_the_standard_format(checkpoint, no_prompt):
    directory, model, processor = checkpoint
    segmenter = pipeline("image-segmentation", model=str(directory))
    assert type(segmenter.model) is DeepLabV2ForSemanticSegmentation
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results, "the pipeline returned no segment"
    for result in results:
        assert set(result) == {"score", "label", "mask"}
        assert result["label"] in model.config.id2label.values()
        assert result["mask"].mode == "L" and result["mask"].size == (70, 50)

    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[(50, 70)])[0]
    assert {r["label"] for r in results} == {model.config.id2label[int(i)] for i in expected.unique()}
    for result in results:
        class_id = model.config.label2id[result["label"]]
        assert np.array_equal(np.asarray(result["mask"]) > 0, expected.numpy() == class_id)


def test_remote_code_load_without_the_package(checkpoint, tmp_path):
    directory, model, _ = checkpoint
    pixel_values = torch.randn(1, 3, 33, 49)
    with torch.no_grad():
        expected = model(pixel_values).logits
    torch.save(pixel_values, tmp_path / "input.pt")
    code = (
        BLOCK_PACKAGE_IMPORT
        + f"""
import builtins
def refuse(*args, **kwargs):
    raise SystemExit("transformers prompted for input")
builtins.input = refuse
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoModelForSemanticSegmentation, pipeline
model = AutoModelForSemanticSegmentation.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == "DeepLabV2ForSemanticSegmentation"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True)) is type(model)
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "input.pt")!r})).logits
torch.save(logits, {str(tmp_path / "output.pt")!r})
segmenter = pipeline("image-segmentation", model={str(directory)!r}, trust_remote_code=True)
assert type(segmenter.image_processor).__module__.startswith("transformers_modules")
results = segmenter(Image.fromarray(np.full((24, 40, 3), 127, dtype=np.uint8)))
assert results and all(r["mask"].size == (40, 24) for r in results)
print("remote ok")
"""
    )
    result = subprocess.run(
        [PYTHON, "-c", code], env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote ok" in result.stdout
    assert torch.equal(torch.load(tmp_path / "output.pt"), expected)
