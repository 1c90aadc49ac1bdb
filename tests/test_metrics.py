"""cpfcte_hf.models.cpfcte.metrics against an independent implementation of `evaluate`'s mean_iou formula and hand-made cases."""

import math

import numpy as np
import pytest

from cpfcte_hf.models.cpfcte.metrics import (
    SegmentationMetric,
    confusion_matrix,
    iou_from_confusion_matrix,
    mean_iou,
)


def evaluate_mean_iou_formula(results, gt_seg_maps, num_labels, ignore_index):
    """`evaluate`'s mean_iou (intersect_and_union + total_intersect_and_union), written out from its formula."""
    total_intersect = np.zeros(num_labels)
    total_union = np.zeros(num_labels)
    total_pred = np.zeros(num_labels)
    total_label = np.zeros(num_labels)
    for pred, label in zip(results, gt_seg_maps):
        keep = label != ignore_index
        pred = pred[keep]
        label = label[keep]
        intersect = pred[pred == label]
        area_intersect = np.histogram(intersect, bins=num_labels, range=(0, num_labels - 1))[0]
        area_pred = np.histogram(pred, bins=num_labels, range=(0, num_labels - 1))[0]
        area_label = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
        total_intersect += area_intersect
        total_union += area_pred + area_label - area_intersect
        total_pred += area_pred
        total_label += area_label
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = total_intersect / total_union
        acc = total_intersect / total_label
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(acc),
        "overall_accuracy": total_intersect.sum() / total_label.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": acc,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_evaluate_formula_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    num_labels = 6
    predictions, references = [], []
    for _ in range(5):
        h, w = rng.integers(5, 30, size=2)
        # Skewed classes, so that some are rare or absent, plus ignore pixels in the references.
        reference = rng.choice(num_labels, size=(h, w), p=[0.4, 0.3, 0.2, 0.1, 0.0, 0.0]).astype(np.uint8)
        reference[rng.random((h, w)) < 0.1] = 255
        prediction = np.where(rng.random((h, w)) < 0.6, reference, rng.integers(0, num_labels - 1, (h, w)))
        prediction[prediction == 255] = 0
        predictions.append(prediction.astype(np.uint8))
        references.append(reference)

    expected = evaluate_mean_iou_formula(predictions, references, num_labels, 255)
    metric = SegmentationMetric(num_labels)
    for prediction, reference in zip(predictions, references):
        metric.update(prediction, reference)
    scores = metric.compute()

    np.testing.assert_allclose(scores.per_class_iou, expected["per_category_iou"], equal_nan=True)
    np.testing.assert_allclose(scores.per_class_accuracy, expected["per_category_accuracy"], equal_nan=True)
    assert scores.mean_iou == pytest.approx(expected["mean_iou"])
    assert scores.mean_accuracy == pytest.approx(expected["mean_accuracy"])
    assert scores.pixel_accuracy == pytest.approx(expected["overall_accuracy"])
    assert np.isnan(scores.per_class_iou[5])  # never in ground truth, never predicted
    assert scores.num_images == 5
    # The functional form over the same list gives the same numbers.
    assert mean_iou(predictions, references, num_labels)["mean_iou"] == pytest.approx(expected["mean_iou"])


def test_split_level_matrix_differs_from_mean_of_per_image_ious():
    # One big image where class 1 is perfect, one tiny image where it is all wrong: the split-level IoU weights
    # pixels, not images.
    big_ref = np.ones((10, 10), np.uint8)
    small_ref = np.ones((1, 2), np.uint8)
    metric = SegmentationMetric(2).update(big_ref, big_ref).update(np.zeros((1, 2), np.uint8), small_ref)
    iou = metric.compute().per_class_iou
    assert iou[1] == pytest.approx(100 / 102)
    assert iou[0] == 0.0  # predicted on 2 pixels, never right


def test_hand_made_case():
    reference = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    prediction = np.array([[0, 1, 1, 1], [0, 0, 2, 2]], np.uint8)
    scores = SegmentationMetric(4).update(prediction, reference).compute()
    # class 0: intersection 3, gt 4, pred 3 -> 3/4; class 1: inter 2, gt 3, pred 3 -> 2/4;
    # class 2: predicted once on a labelled pixel, never in gt -> 0/1; class 3 absent -> NaN.
    np.testing.assert_allclose(scores.per_class_iou[:3], [0.75, 0.5, 0.0])
    assert math.isnan(scores.per_class_iou[3])
    assert scores.mean_iou == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert scores.pixel_accuracy == pytest.approx(5 / 7)
    assert scores.num_pixels == 7


def test_all_ignore_image_adds_nothing():
    metric = SegmentationMetric(3)
    metric.update(np.array([[1, 2]], np.uint8), np.array([[1, 2]], np.uint8))
    before = metric.confusion_matrix.copy()
    metric.update(np.full((4, 4), 2, np.uint8), np.full((4, 4), 255, np.uint8))
    np.testing.assert_array_equal(metric.confusion_matrix, before)
    assert metric.num_images == 2
    scores = metric.compute()
    assert math.isnan(scores.per_class_iou[0])
    assert scores.mean_iou == 1.0


def test_only_ignore_gives_nan_everywhere():
    scores = SegmentationMetric(3).update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)).compute()
    assert math.isnan(scores.mean_iou) and math.isnan(scores.pixel_accuracy)
    assert scores.to_dict(["bg", "a", "b"])["mean_iou"] is None  # JSON-ready


def test_invalid_prediction_values_count_as_wrong():
    reference = np.array([[0, 1]], np.uint8)
    prediction = np.array([[255, 1]], np.uint8)  # 255 in a prediction is not "ignore"
    scores = SegmentationMetric(2).update(prediction, reference).compute()
    assert scores.per_class_iou[0] == 0.0
    assert scores.per_class_iou[1] == 1.0
    assert scores.pixel_accuracy == 0.5
    expected = evaluate_mean_iou_formula([prediction], [reference], 2, 255)
    np.testing.assert_allclose(scores.per_class_iou, expected["per_category_iou"])


def test_batches_lists_merge_and_load_agree():
    rng = np.random.default_rng(3)
    predictions = rng.integers(0, 4, (3, 8, 9))
    references = rng.integers(0, 4, (3, 8, 9))
    batched = SegmentationMetric(4).update(predictions, references)
    listed = SegmentationMetric(4).update(list(predictions), list(references))
    halves = SegmentationMetric(4).update(predictions[:1], references[:1]) + SegmentationMetric(4).update(
        predictions[1:], references[1:]
    )
    loaded = SegmentationMetric(4).load(batched.confusion_matrix, batched.num_images)
    for other in (listed, halves, loaded):
        np.testing.assert_array_equal(other.confusion_matrix, batched.confusion_matrix)
        assert other.num_images == 3
    assert batched.confusion_matrix.sum() == 3 * 8 * 9


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 3)), np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(np.zeros((1, 2)), np.array([[0, 7]]), 2)
    with pytest.raises(ValueError, match="Cannot merge"):
        SegmentationMetric(2).merge(SegmentationMetric(3))


def test_iou_from_square_matrix_and_table():
    matrix = np.array([[3, 1], [0, 2]])
    np.testing.assert_allclose(iou_from_confusion_matrix(matrix), [3 / 4, 2 / 3])
    metric = SegmentationMetric(2).load(np.array([[3, 1, 0], [0, 2, 0]]))
    table = metric.compute().per_class_table(["background", "cat"])
    assert table[1] == {
        "class_id": 1,
        "class_name": "cat",
        "iou": pytest.approx(2 / 3),
        "accuracy": 1.0,
        "gt_pixels": 2,
        "predicted_pixels": 3,
    }


def _all_reduce_worker(rank, init_file, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metric = SegmentationMetric(3).update(np.full((2, 2), rank), np.array([[rank, 1], [2, 255]]))
        metric.all_reduce()
        results[rank] = (metric.confusion_matrix.tolist(), metric.num_images)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_the_confusion_matrix_over_processes(tmp_path):
    """Two real gloo processes: each ends with the sum of both matrices and image counts; alone, nothing changes."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(_all_reduce_worker, args=(str(tmp_path / "init"), results), nprocs=2, start_method="fork")
    expected = SegmentationMetric(3)
    for rank in range(2):
        expected.update(np.full((2, 2), rank), np.array([[rank, 1], [2, 255]]))
    assert results[0] == results[1] == (expected.confusion_matrix.tolist(), 2)
    alone = SegmentationMetric(3).update(np.zeros((2, 2)), np.zeros((2, 2)))
    before = alone.confusion_matrix.copy()
    assert np.array_equal(alone.all_reduce().confusion_matrix, before) and alone.num_images == 1
