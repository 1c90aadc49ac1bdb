"""The registered pseudo-labelling pipeline: tags, outputs, bad input, save_pretrained + remote code without the package."""

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from cpfcte_hf import CPFCTEImageProcessor
from cpfcte_hf.models.cpfcte.crf import DenseCRFConfig, crf_mask
from cpfcte_hf.models.cpfcte.inference import predict_class_probabilities
from cpfcte_hf.models.cpfcte.pipelines import (
    PSEUDO_LABELLING_TASK,
    WeaklySupervisedPseudoLabelingPipeline,
    class_ids_from_tags,
)

from .utils import BLOCK_PACKAGE_IMPORT, PYTHON, save_tiny_checkpoint, subprocess_env


CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_model")
    save_tiny_checkpoint(directory, classifier_init_std=50.0)  # logits of std ~1: masks with several classes
    return str(directory)


@pytest.fixture(scope="module")
def labeller(checkpoint):
    return pipeline(PSEUDO_LABELLING_TASK, model=checkpoint)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)
    array[8:28, 10:40] = [220, 30, 30]
    return array


def test_tags_by_name_id_or_both():
    id2label = dict(enumerate(CLASS_NAMES))
    assert class_ids_from_tags(["class_2"], id2label) == [0, 2]
    assert class_ids_from_tags([3, "CLASS_1", "2"], id2label) == [0, 1, 2, 3]
    assert class_ids_from_tags("background", id2label) == [0]
    with pytest.raises(ValueError) as error:
        class_ids_from_tags(["class_1", "dog", 9], id2label)
    assert "['dog', 9]" in str(error.value) and "class_3" in str(error.value)
    with pytest.raises(ValueError):
        class_ids_from_tags([True], id2label)


def test_pipeline_output_matches_the_library_steps(labeller, image):
    assert isinstance(labeller, WeaklySupervisedPseudoLabelingPipeline)
    result = labeller(Image.fromarray(image), tags=["class_1", 3], size=32)
    assert set(result) == {"mask", "bpm", "labels", "scores", "tags"}
    assert result["mask"].mode == "P" and result["mask"].size == (52, 36)
    mask, bpm = np.asarray(result["mask"]), np.asarray(result["bpm"])
    assert set(np.unique(mask)) <= {0, 1, 3} and set(np.unique(bpm)) <= {0, 1, 3}
    assert result["tags"] == ["background", "class_1", "class_3"]
    assert result["labels"] == [CLASS_NAMES[c] for c in np.unique(mask)]

    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    (probabilities,), scores = predict_class_probabilities(labeller.model, [image], labels, size=32)
    np.testing.assert_array_equal(bpm, probabilities.numpy().argmax(0))
    np.testing.assert_array_equal(mask, crf_mask(image, probabilities.numpy()))
    assert list(result["scores"]) == CLASS_NAMES
    assert [result["scores"][n] for n in CLASS_NAMES] == pytest.approx(scores[0].tolist(), abs=1e-6)
    assert len(np.unique(bpm)) > 1  # the fixture model is not degenerate


def test_pipeline_options_and_batches(labeller, image):
    no_crf = labeller(image, tags=[2], size=32, crf=False)
    np.testing.assert_array_equal(np.asarray(no_crf["mask"]), np.asarray(no_crf["bpm"]))
    untagged = labeller(image, size=32)
    assert untagged["tags"] is None
    batch = labeller([{"image": image, "tags": ["class_2"]}, {"image": image[:, ::-1], "tags": ["class_3"]}], size=32)
    assert [r["tags"] for r in batch] == [["background", "class_2"], ["background", "class_3"]]
    flipped = labeller(image, tags=[1, 2], size=32, scales=[1.0, 1.5], flip=True)
    mirrored = labeller(np.ascontiguousarray(image[:, ::-1]), tags=[1, 2], size=32, scales=[1.0, 1.5], flip=True)
    np.testing.assert_array_equal(np.asarray(flipped["bpm"])[:, ::-1], np.asarray(mirrored["bpm"]))
    softer = labeller(image, tags=[1, 2], size=32, crf_config={"iterations": 0})
    np.testing.assert_array_equal(np.asarray(softer["mask"]), np.asarray(softer["bpm"]))
    assert labeller(image, tags=[1, 2], size=32, crf_config=DenseCRFConfig())["mask"].size == (52, 36)


def test_pipeline_bad_input(labeller, image, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown class tag\(s\) \['dog'\].*class_1"):
        labeller(image, tags=["dog"], size=32)
    with pytest.raises(ValueError, match="5x3 pixels, smaller than one 8x8 patch"):
        labeller(np.zeros((3, 5, 3), np.uint8), tags=[1], size=32)
    with pytest.raises(ValueError, match="'image' key"):
        labeller({"tags": [1]}, size=32)
    with pytest.raises(TypeError, match="colour"):
        labeller(image, colour="red")
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    assert labeller(str(path), tags=[1], size=32, crf=False)["mask"].size == (52, 36)


def test_an_empty_tag_list_is_refused_naming_the_untagged_way(labeller, image):
    """tags=[] would suppress every object class (an all-background mask): a ValueError that says what to do."""
    for empty in ([], (), iter([])):
        with pytest.raises(ValueError, match=r"tags=\[\]: an empty tag list.*tags=None.*image-segmentation"):
            labeller(image, tags=empty, size=32)
    with pytest.raises(ValueError, match="empty tag list"):
        labeller({"image": image, "tags": []}, size=32)
    untagged = labeller(image, size=32, crf=False)  # the untagged path the message names: every class competes
    assert untagged["tags"] is None and len(np.unique(np.asarray(untagged["mask"]))) > 1
    assert labeller(image, tags=iter(["class_1"]), size=32, crf=False)["tags"] == ["background", "class_1"]


@pytest.fixture
def transformers_log():
    """What transformers' own logger prints (it does not propagate to the root logger, so caplog misses it)."""
    import io
    import logging

    from transformers.utils import logging as hf_logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    hf_logging.add_handler(handler)
    yield stream
    hf_logging.remove_handler(handler)


def test_pipelines_of_this_packages_models_log_no_unsupported_model_error(checkpoint, tmp_path, transformers_log):
    """transformers logs "The model '...' is not supported for image-segmentation" for models outside its own
    list; the package's registered models (CPF-CTE, DeepLab-v2) are supported, any other model is still reported."""
    from transformers import ViTConfig, ViTForImageClassification

    from .deeplab_helpers import save_tiny_deeplab

    save_tiny_deeplab(tmp_path / "deeplab")
    for task, model in (
        ("image-segmentation", checkpoint),
        ("image-segmentation", str(tmp_path / "deeplab")),
        (PSEUDO_LABELLING_TASK, checkpoint),
    ):
        pipeline(task, model=model)
    assert "is not supported" not in transformers_log.getvalue(), transformers_log.getvalue()

    other = ViTForImageClassification(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                                intermediate_size=8, image_size=16, patch_size=8))  # fmt: skip
    pipeline("image-segmentation", model=other, image_processor=CPFCTEImageProcessor())
    assert "The model 'ViTForImageClassification' is not supported for image-segmentation" in (
        transformers_log.getvalue()
    )


def test_image_segmentation_pipeline_still_works(checkpoint, image):
    segmenter = pipeline("image-segmentation", model=checkpoint)
    segments = segmenter(Image.fromarray(image))
    assert segments and {s["label"] for s in segments} <= set(CLASS_NAMES)
    assert segments[0]["mask"].size == (52, 36)


REMOTE_SCRIPT = """
import json, sys
import numpy as np
from PIL import Image
from transformers import pipeline
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
labeller = pipeline("weakly-supervised-pseudo-labelling", model=sys.argv[1], trust_remote_code=True)
result = labeller(image, tags=["class_1", "class_3"], size=32)
segments = pipeline("image-segmentation", model=sys.argv[1], trust_remote_code=True)(Image.fromarray(image))
print("RESULT", json.dumps({
    "pipeline_module": type(labeller).__module__,
    "model_module": type(labeller.model).__module__,
    "mask": np.asarray(result["mask"]).tolist(),
    "labels": result["labels"],
    "segments": sorted(s["label"] for s in segments),
}))
"""


@pytest.mark.slow
def test_saved_pipeline_loads_as_remote_code_without_the_package(labeller, image, tmp_path):
    saved = tmp_path / "saved"
    labeller.save_pretrained(saved)
    files = set(os.listdir(saved))
    assert {
        "pipelines.py",
        "class_names.py",
        "crf.py",
        "visualization.py",
        "image_processing_cpfcte.py",
        "inference.py",
        "modeling_cpfcte.py",
        "metrics.py",  # a leaf (numpy only): visualization takes the one IGNORE_INDEX from it
    } <= files
    assert not {"pseudo_labeling.py", "__init__.py", "hub.py", "trainer.py"} & files
    config = json.loads((saved / "config.json").read_text())
    assert (
        config["custom_pipelines"][PSEUDO_LABELLING_TASK]["impl"] == "pipelines.WeaklySupervisedPseudoLabelingPipeline"
    )
    assert config["custom_pipelines"][PSEUDO_LABELLING_TASK]["pt"] == ["AutoModelForSemanticSegmentation"]

    Image.fromarray(image).save(tmp_path / "image.png")
    code = BLOCK_PACKAGE_IMPORT + REMOTE_SCRIPT
    result = subprocess.run(
        [PYTHON, "-c", code, str(saved), str(tmp_path / "image.png")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    remote = json.loads(line[len("RESULT ") :])
    assert remote["pipeline_module"].startswith("transformers_modules.")
    assert remote["model_module"].startswith("transformers_modules.")
    local = labeller(image, tags=["class_1", "class_3"], size=32)
    np.testing.assert_array_equal(np.array(remote["mask"], dtype=np.uint8), np.asarray(local["mask"]))
    assert remote["labels"] == local["labels"]
    assert set(remote["segments"]) <= set(CLASS_NAMES)

    # With the package installed, the saved directory loads through the registered class (transformers insists on
    # `trust_remote_code` for a directory that declares a custom pipeline unless the class is given).
    again = pipeline(PSEUDO_LABELLING_TASK, model=str(saved), pipeline_class=WeaklySupervisedPseudoLabelingPipeline)
    np.testing.assert_array_equal(np.asarray(again(image, tags=[1, 3], size=32)["mask"]), np.asarray(local["mask"]))
    assert pipeline("image-segmentation", model=str(saved))(Image.fromarray(image))


def test_image_segmentation_scores_threshold_and_too_small_images(checkpoint, image):
    from transformers import ImageSegmentationPipeline

    from cpfcte_hf.models.cpfcte.pipelines import CPFCTEImageSegmentationPipeline

    segmenter = pipeline("image-segmentation", model=checkpoint)
    assert isinstance(segmenter, CPFCTEImageSegmentationPipeline)
    segments = segmenter(Image.fromarray(image))
    with torch.no_grad():
        inputs = segmenter.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
        scores = segmenter.model(**inputs).image_scores[0]
    for segment in segments:
        assert segment["score"] == pytest.approx(float(scores[CLASS_NAMES.index(segment["label"])]), abs=1e-6)

    # The default keeps transformers' semantic masks.
    plain = pipeline("image-segmentation", model=checkpoint, pipeline_class=ImageSegmentationPipeline)
    reference = plain(Image.fromarray(image))
    assert [s["label"] for s in segments] == [s["label"] for s in reference]
    for ours, theirs in zip(segments, reference):
        np.testing.assert_array_equal(np.asarray(ours["mask"]), np.asarray(theirs["mask"]))

    # A threshold drops the classes whose image-level score is below it; their pixels go to the remaining ones.
    foreground = sorted(float(scores[i]) for i in range(1, len(CLASS_NAMES)))
    threshold = (foreground[0] + foreground[-1]) / 2
    kept = segmenter(Image.fromarray(image), threshold=threshold)
    assert {s["label"] for s in kept} <= {"background"} | {
        CLASS_NAMES[i] for i in range(1, len(CLASS_NAMES)) if float(scores[i]) >= threshold
    }
    assert sum(np.asarray(s["mask"]).astype(bool).sum() for s in kept) == image.shape[0] * image.shape[1]
    with pytest.raises(ValueError, match="threshold must be in"):
        segmenter(Image.fromarray(image), threshold=2)

    with pytest.raises(ValueError, match="1x1 pixels, smaller than one 8x8 patch"):
        segmenter(Image.new("RGB", (1, 1)))


def test_pseudo_labelling_pipeline_uses_the_displayed_orientation(labeller, image, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 52x36, displayed 36x52
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, format="JPEG", exif=exif.tobytes())
    with Image.open(path) as opened:
        from_pil = labeller(opened, tags=[1], size=32, crf=False)
    from_path = labeller(str(path), tags=[1], size=32, crf=False)
    assert from_pil["mask"].size == from_path["mask"].size == (36, 52)
    np.testing.assert_array_equal(np.asarray(from_pil["mask"]), np.asarray(from_path["mask"]))
