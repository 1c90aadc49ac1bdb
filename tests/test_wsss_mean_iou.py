# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The `wsss_mean_iou` evaluate module: loaded offline by path, streaming with `add_batch`, `mean_iou`'s interface,
exactly the numbers of `cpfcte_hf.models.cpfcte.metrics`, and those of `mean_iou`'s published formula (written out below)."""

import numpy as np
import pytest

from cpfcte_hf.evaluation import WSSS_MEAN_IOU_PATH, load_wsss_mean_iou
from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric


evaluate = pytest.importorskip("evaluate")

NUM_LABELS = 6
KEYS = {"mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"}


def formula_mean_iou(predictions, references, num_labels, ignore_index):
    """`evaluate`'s `mean_iou` as its card defines it: per-class pixel histograms summed over images."""
    intersect, union, area_label = (np.zeros(num_labels) for _ in range(3))
    for prediction, reference in zip(predictions, references):
        keep = reference != ignore_index
        prediction, reference = prediction[keep], reference[keep]
        hit = prediction[prediction == reference]
        bins = {"bins": num_labels, "range": (0, num_labels - 1)}
        area_intersect = np.histogram(hit, **bins)[0]
        area_pred = np.histogram(prediction, **bins)[0]
        area_ref = np.histogram(reference, **bins)[0]
        intersect += area_intersect
        union += area_pred + area_ref - area_intersect
        area_label += area_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = intersect / union, intersect / area_label
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(accuracy),
        "overall_accuracy": intersect.sum() / area_label.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


@pytest.fixture(scope="module")
def masks():
    """Random masks of different sizes with ignore pixels, a class absent everywhere (4), predictions of 255 and of
    values >= num_labels, and a class predicted but never in the references (5)."""
    rng = np.random.default_rng(0)
    predictions, references = [], []
    for height, width in [(7, 9), (12, 5), (16, 16), (3, 4)]:
        reference = rng.choice([0, 1, 2, 3, 255], size=(height, width), p=[0.3, 0.25, 0.2, 0.15, 0.1])
        prediction = rng.choice([0, 1, 2, 3, 5, 9, 255], size=(height, width))
        predictions.append(prediction.astype(np.int64))
        references.append(reference.astype(np.uint8))
    return predictions, references


@pytest.fixture(scope="module")
def metric():
    return load_wsss_mean_iou()


def test_loads_by_path_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = evaluate.load(str(WSSS_MEAN_IOU_PATH))
    assert module.name == "wsss_mean_iou"
    assert set(module.features) == {"predictions", "references"}


def test_streaming_equals_metrics_py_and_the_formula(metric, masks):
    predictions, references = masks
    for prediction, reference in zip(predictions, references):
        metric.add_batch(predictions=[prediction], references=[reference])
    results = metric.compute(num_labels=NUM_LABELS, ignore_index=255)
    assert KEYS <= set(results)

    scores = SegmentationMetric(NUM_LABELS, 255).update(predictions, references).compute()
    assert results["mean_iou"] == scores.mean_iou
    assert results["overall_accuracy"] == scores.pixel_accuracy
    assert results["mean_accuracy"] == scores.mean_accuracy
    np.testing.assert_array_equal(results["per_category_iou"], scores.per_class_iou)
    np.testing.assert_array_equal(results["per_category_accuracy"], scores.per_class_accuracy)
    np.testing.assert_array_equal(results["confusion_matrix"], scores.confusion_matrix)
    assert results["num_images"] == len(predictions)

    expected = formula_mean_iou(predictions, references, NUM_LABELS, 255)
    for key in KEYS:
        np.testing.assert_allclose(results[key], expected[key], rtol=1e-12, equal_nan=True, err_msg=key)
    assert np.isnan(results["per_category_iou"][4])  # absent from references and predictions
    assert results["per_category_iou"][5] == 0.0  # predicted, never a reference


def test_one_compute_call_equals_the_batches(metric, masks):
    predictions, references = masks
    at_once = metric.compute(predictions=predictions, references=references, num_labels=NUM_LABELS, ignore_index=255)
    for half in (slice(0, 2), slice(2, None)):
        metric.add_batch(predictions=predictions[half], references=references[half])
    streamed = metric.compute(num_labels=NUM_LABELS, ignore_index=255)
    np.testing.assert_array_equal(at_once["confusion_matrix"], streamed["confusion_matrix"])


def test_mean_iou_options(metric, masks):
    predictions, references = masks
    results = metric.compute(
        predictions=predictions, references=references, num_labels=NUM_LABELS, ignore_index=255, nan_to_num=-1
    )
    assert results["per_category_iou"][4] == -1

    # label_map: reference class 3 counts as 2; reduce_labels: background becomes ignored, the rest shift down.
    mapped = metric.compute(
        predictions=predictions, references=references, num_labels=NUM_LABELS, ignore_index=255, label_map={3: 2}
    )
    remapped = [np.where(reference == 3, 2, reference) for reference in references]
    np.testing.assert_array_equal(
        mapped["confusion_matrix"],
        SegmentationMetric(NUM_LABELS).update(predictions, remapped).compute().confusion_matrix,
    )
    reduced = metric.compute(
        predictions=predictions, references=references, num_labels=NUM_LABELS, ignore_index=255, reduce_labels=True
    )
    shifted = [
        np.where(reference == 0, 255, np.where(reference == 255, 255, reference.astype(np.int64) - 1))
        for reference in references
    ]
    expected = formula_mean_iou(predictions, shifted, NUM_LABELS, 255)
    np.testing.assert_allclose(reduced["per_category_iou"], expected["per_category_iou"], equal_nan=True)


def test_references_outside_the_classes_are_an_error(metric):
    with pytest.raises(ValueError, match="outside 0..2"):
        metric.compute(predictions=[np.zeros((2, 2), int)], references=[np.full((2, 2), 7)], num_labels=3)
