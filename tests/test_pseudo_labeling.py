"""Pseudo-label generation end to end on a tiny model: masks, resume, bad input, report, several processes."""

import copy
import csv
import json
import logging
import os
import re
import runpy
import subprocess

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from cpfcte_hf.evaluation.report import evaluate_predictions
from cpfcte_hf.models.cpfcte.crf import crf_mask
from cpfcte_hf.models.cpfcte.inference import predict_class_probabilities
from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric
from cpfcte_hf.models.cpfcte.visualization import read_mask, save_mask
from cpfcte_hf.prediction.config import PseudoLabelConfig
from cpfcte_hf.prediction.pseudo_labels import generate_pseudo_labels, resolve_inference_size
from cpfcte_hf.utils.checkpoints import load_model
from cpfcte_hf.utils.fingerprint import FingerprintMismatch
from cpfcte_hf.utils.output_dir import prepare_output_dir

from .data_trees import write_voc_tree
from .utils import accelerate_launch, save_tiny_checkpoint, subprocess_env


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]


def make_dataset(count=5, seed=0, extra_rows=()):
    """Rows of the `cpfcte_hf.data` schema: images of different sizes, a square object, its tag, 255 borders."""
    rng = np.random.default_rng(seed)
    rows = {"id": [], "image": [], "mask": [], "labels": []}
    for i in range(count):
        height, width = 26 + 3 * i, 40 - 2 * i
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        cls = 1 + i % 3
        mask[5:20, 8:28] = cls
        image[mask == cls] = (image[mask == cls] // 4 + [180, 20, 20]).astype(np.uint8)
        mask[0] = 255
        rows["id"].append(f"img_{i}")
        rows["image"].append(Image.fromarray(image))
        rows["mask"].append(Image.fromarray(mask))
        rows["labels"].append([0, cls])
    for row in extra_rows:
        for key in rows:
            rows[key].append(row[key])
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "labels": datasets.List(datasets.ClassLabel(names=CLASS_NAMES)),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_model")
    # A wide classifier init makes the random model's class maps far from uniform, so that masks vary.
    save_tiny_checkpoint(directory, classifier_init_std=50.0)  # logits of std ~1
    return str(directory)


@pytest.fixture(scope="module")
def model_and_processor(checkpoint):
    return load_model(checkpoint)


def tiny_config(**overrides):
    values = dict(size=32, crf_workers=1, progress=False, num_overlays=2)
    values.update(overrides)
    return PseudoLabelConfig(**values)


def png_mtimes(directory):
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in sorted(os.listdir(directory))}


def test_masks_follow_the_image_processor_path_and_the_image_labels(tmp_path, model_and_processor):
    model, processor = model_and_processor
    dataset = make_dataset()
    summary = generate_pseudo_labels(model, dataset, tmp_path, tiny_config(), image_processor=processor)
    assert (summary.total, summary.written, summary.failed) == (5, 5, 0)

    processor.size = {"height": 32, "width": 32}
    for row in dataset:
        image = np.asarray(row["image"])
        bpm = read_mask(tmp_path / "bpm" / f"{row['id']}.png")
        crf = read_mask(tmp_path / "crf" / f"{row['id']}.png")
        assert bpm.shape == crf.shape == image.shape[:2]
        assert set(np.unique(bpm)) <= set(row["labels"]) and set(np.unique(crf)) <= set(row["labels"])

        # The same mask through the image processor and post_process_semantic_segmentation.
        labels = torch.zeros(1, 4)
        labels[0, row["labels"]] = 1
        with torch.no_grad():
            outputs = model(**processor(row["image"], return_tensors="pt"))
        expected = processor.post_process_semantic_segmentation(outputs, [image.shape[:2]], labels=labels)[0]
        np.testing.assert_array_equal(bpm, expected.numpy())
        # And the CRF output is the CRF of those probabilities.
        (probabilities,), _ = predict_class_probabilities(model, [image], labels, size=32)
        np.testing.assert_array_equal(crf, crf_mask(image, probabilities.numpy()))
        assert (probabilities.numpy().argmax(0) == bpm).all()


def test_report_files_agree_with_the_masks_on_disk(tmp_path, model_and_processor):
    model, processor = model_and_processor
    dataset = make_dataset()
    summary = generate_pseudo_labels(
        model, dataset, tmp_path, tiny_config(), image_processor=processor, dataset_name="toy", split="train"
    )
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report == json.loads(json.dumps(summary.report))
    for name, folder in (("BPM", "bpm"), ("CRF", "crf")):
        metric = SegmentationMetric(4)
        for row in dataset:
            metric.update(read_mask(tmp_path / folder / f"{row['id']}.png"), np.asarray(row["mask"]))
        scores = metric.compute()
        entry = report["predictions"][name]
        assert entry["mean_iou"] == pytest.approx(scores.mean_iou)
        assert entry["num_scored"] == 5 and entry["num_missing"] == 0
        assert [c["iou"] for c in entry["per_class"]] == pytest.approx(list(scores.per_class_iou))

    with open(tmp_path / "report" / "per_class_iou.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class_name"] for r in rows] == CLASS_NAMES + ["mean"]
    assert float(rows[-1]["CRF_iou"]) == pytest.approx(report["predictions"]["CRF"]["mean_iou"], abs=1e-6)
    assert int(rows[0]["gt_pixels"]) == sum(int((np.asarray(r["mask"]) == 0).sum()) for r in dataset)
    assert Image.open(tmp_path / "report" / "per_class_iou.png").format == "PNG"
    assert sorted(os.listdir(tmp_path / "report" / "overlays")) == ["img_0.png", "img_1.png"]
    summary_file = json.loads((tmp_path / "summary.json").read_text())
    assert summary_file["written"] == 5 and summary_file["config"]["size"] == 32
    assert summary_file["config"]["crf_config"]["bilateral_sxy"] == 67.0


def test_rerun_skips_finished_images_and_redoes_missing_ones(tmp_path, model_and_processor):
    model, processor = model_and_processor
    dataset = make_dataset()
    generate_pseudo_labels(model, dataset, tmp_path, tiny_config(num_overlays=0), image_processor=processor)
    first = {
        folder: {n: read_mask(tmp_path / folder / n) for n in os.listdir(tmp_path / folder)}
        for folder in ("bpm", "crf")
    }
    # A run killed mid-way: a CRF mask missing, a BPM mask missing, a half-written temporary file left behind.
    os.remove(tmp_path / "crf" / "img_1.png")
    os.remove(tmp_path / "bpm" / "img_2.png")
    (tmp_path / "crf" / ".tmp-abc.png").write_bytes(b"\x89PNG partial")
    redone = {"img_1.png", "img_2.png"}
    untouched = {k: v for k, v in png_mtimes(tmp_path / "crf").items() if k.startswith("img_") and k not in redone}
    assert len(untouched) == 3

    summary = generate_pseudo_labels(model, dataset, tmp_path, tiny_config(num_overlays=0), image_processor=processor)
    assert (summary.written, summary.already_done, summary.failed) == (2, 3, 0)
    after = png_mtimes(tmp_path / "crf")
    for name, mtime in untouched.items():
        assert after[name] == mtime, f"{name} was rewritten"
    for folder in ("bpm", "crf"):
        for name, mask in first[folder].items():
            np.testing.assert_array_equal(read_mask(tmp_path / folder / name), mask)
    assert summary.report["predictions"]["CRF"]["num_scored"] == 5  # the stray temp file is not a prediction

    again = generate_pseudo_labels(
        model, dataset, tmp_path, tiny_config(num_overlays=0, overwrite=True), image_processor=processor
    )
    assert (again.written, again.already_done) == (5, 0)


def test_bad_images_are_reported_and_the_rest_is_written(tmp_path, model_and_processor):
    model, processor = model_and_processor
    tiny = np.zeros((4, 6, 3), np.uint8)
    extra = [
        {"id": "too_small", "image": Image.fromarray(tiny), "mask": Image.fromarray(tiny[..., 0]), "labels": [0]},
        {"id": "../escape", "image": Image.fromarray(np.zeros((20, 20, 3), np.uint8)), "mask": None, "labels": [0]},
    ]
    dataset = make_dataset(count=4, extra_rows=extra)
    prepare_output_dir(tmp_path, ["crf"])
    (tmp_path / "crf" / "img_3.png").mkdir()  # the CRF mask of img_3 cannot be written
    summary = generate_pseudo_labels(model, dataset, tmp_path, tiny_config(num_overlays=0), image_processor=processor)

    failures = {f.id: f for f in summary.failures}
    assert sorted(failures) == ["../escape", "img_3", "too_small"]
    assert "6x4 pixels, smaller than one 8x8 patch" in failures["too_small"].error
    assert failures["img_3"].stage == "write"
    assert "cannot be a file name" in failures["../escape"].error
    assert summary.written == 3
    assert sorted(os.listdir(tmp_path / "crf")) == ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]
    assert (tmp_path / "bpm" / "img_3.png").is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["failed"] == 3 and {f["id"] for f in saved["failures"]} == set(failures)
    report = summary.report["predictions"]["CRF"]
    assert report["num_scored"] == 3 and report["num_missing"] == 2  # img_3 and too_small; no GT for ../escape
    assert summary.report["ground_truth_unreadable"] == [{"id": "../escape", "error": "no ground-truth mask"}]


def test_output_dir_that_is_a_file_and_model_without_weights(tmp_path, model_and_processor, checkpoint):
    model, processor = model_and_processor
    target = tmp_path / "out"
    target.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="out"):
        generate_pseudo_labels(model, make_dataset(1), target, tiny_config())
    with pytest.raises(NotADirectoryError, match="out"):
        prepare_output_dir(target / "sub")

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(open(os.path.join(checkpoint, "config.json")).read())
    with pytest.raises(FileNotFoundError, match="no_weights.*no weights"):
        load_model(no_weights)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_flip_averaging_is_flip_equivariant_and_no_crf_writes_bpm_only(tmp_path, model_and_processor):
    model, processor = model_and_processor
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    (direct,), _ = predict_class_probabilities(model, [image], labels, size=32, scales=(1.0, 1.5), flip=True)
    (mirrored,), _ = predict_class_probabilities(
        model, [np.ascontiguousarray(image[:, ::-1])], labels, size=32, scales=(1.0, 1.5), flip=True
    )
    np.testing.assert_allclose(mirrored.numpy()[:, :, ::-1], direct.numpy(), atol=1e-5)
    (single,), _ = predict_class_probabilities(model, [image], labels, size=32)
    (single_mirrored,), _ = predict_class_probabilities(model, [np.ascontiguousarray(image[:, ::-1])], labels, size=32)
    # Without the flipped view the model is not equivariant, and the extra views change the maps.
    assert np.abs(single_mirrored.numpy()[:, :, ::-1] - single.numpy()).max() > 0.05
    assert np.abs(single.numpy() - direct.numpy()).max() > 0.05
    np.testing.assert_allclose(direct.sum(0).numpy(), 1.0, atol=1e-5)
    assert float(direct[2].abs().max()) == 0.0  # class 2 is not among the labels

    summary = generate_pseudo_labels(
        model,
        make_dataset(2),
        tmp_path,
        tiny_config(crf=False, scales=(1.0, 1.5), flip=True, num_overlays=0),
        image_processor=processor,
    )
    assert summary.written == 2 and not (tmp_path / "crf").exists()
    assert list(summary.report["predictions"]) == ["BPM"]


def test_evaluate_any_directory_counts_missing_and_wrong_sizes(tmp_path):
    dataset = make_dataset(3)
    predictions = tmp_path / "pred"
    for row in dataset:
        save_mask(np.asarray(row["mask"]), predictions / f"{row['id']}.png")
    os.remove(predictions / "img_2.png")
    save_mask(np.zeros((3, 3), np.uint8), predictions / "img_1.png")
    report = evaluate_predictions(dataset, {"mine": predictions}, tmp_path / "report", class_names=CLASS_NAMES)
    entry = report["predictions"]["mine"]
    assert entry["mean_iou"] == 1.0  # img_0 is the ground truth itself; absent classes do not count
    assert entry["num_scored"] == 1 and entry["missing_ids"] == ["img_2"]
    assert entry["num_failed"] == 1 and "shapes differ" in entry["failures"][0]["error"]
    assert [c["iou"] for c in entry["per_class"]] == [1.0, 1.0, None, None]
    with pytest.raises(NotADirectoryError, match="nowhere"):
        evaluate_predictions(dataset, {"x": tmp_path / "nowhere"}, None, class_names=CLASS_NAMES)


def script_main(name):
    """`main(argv)` of a script, run in this process (the scripts are thin: this is what the command line runs)."""
    return runpy.run_path(os.path.join(REPO, "scripts", name))["main"]


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return write_voc_tree(root, splits={"train_aug": 5, "val": 2}, class_names=CLASS_NAMES)


def voc_args(voc_tree, cache, split="train_aug"):
    return [
        "--dataset",
        "voc",
        "--data-root",
        voc_tree["root"],
        "--split",
        split,
        "--dataset-option",
        f"cache_dir={cache}",
    ]


def test_scripts_on_a_voc_tree_then_evaluate_the_same_directories(tmp_path, checkpoint, voc_tree, capsys):
    data_args = voc_args(voc_tree, tmp_path / "cache")
    out = tmp_path / "out"
    options = ["--size", "32", "--crf-workers", "1", "--no-progress", "--num-overlays", "1"]
    assert script_main("pseudo_label.py")(["--model", checkpoint, *data_args, "--out", str(out), *options]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "5 written, 0 already done, 0 failed" in printed
    ids = voc_tree["ids"]["train_aug"]
    assert sorted(os.listdir(out / "crf")) == sorted(f"{i}.png" for i in ids)
    for item_id in ids:
        assert set(np.unique(read_mask(out / "crf" / f"{item_id}.png"))) <= set(voc_tree["labels"][item_id])
    first = json.loads((out / "report" / "metrics.json").read_text())
    assert first["dataset"] == "voc" and first["split"] == "train_aug"
    assert os.listdir(out / "report" / "overlays") == [f"{ids[0]}.png"]

    # Rerun: nothing to do.
    assert script_main("pseudo_label.py")(["--model", checkpoint, *data_args, "--out", str(out), *options]) == 0
    assert "0 written, 5 already done" in capsys.readouterr().out

    evaluate = script_main("evaluate.py")
    assert evaluate(["--pred", str(out / "bpm"), str(out / "crf"), *data_args, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["predictions"]["bpm"]["per_class"] == first["predictions"]["BPM"]["per_class"]
    assert again["predictions"]["crf"]["mean_iou"] == first["predictions"]["CRF"]["mean_iou"]
    assert (tmp_path / "again" / "per_class_iou.png").is_file()


def test_scripts_reject_bad_arguments_with_a_clear_message(tmp_path, checkpoint, voc_tree, capsys):
    pseudo_label = script_main("pseudo_label.py")
    evaluate = script_main("evaluate.py")
    data_args = voc_args(voc_tree, tmp_path / "cache", split="val")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert pseudo_label(["--model", checkpoint, *data_args, "--out", str(a_file)]) == 2
    assert f"{a_file}" in capsys.readouterr().err

    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    assert pseudo_label(["--model", str(empty_model), *data_args, "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err

    assert pseudo_label(["--model", checkpoint, "--dataset", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "Unknown dataset 'nope'" in capsys.readouterr().err
    assert evaluate(["--pred", str(tmp_path / "missing"), *data_args, "--out", str(tmp_path / "r")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pseudo_label(["--dataset", "voc"])  # --model and --out are required
    assert "--model" in capsys.readouterr().err


@pytest.mark.slow
def test_accelerate_launch_shares_the_split_and_sums_the_metrics(tmp_path, checkpoint, voc_tree):
    data_args = voc_args(voc_tree, tmp_path / "cache")
    options = [
        "--model",
        checkpoint,
        *data_args,
        "--size",
        "32",
        "--crf-workers",
        "1",
        "--no-progress",
        "--num-overlays",
        "0",
    ]
    command = [
        *accelerate_launch(2),
        os.path.join(REPO, "scripts", "pseudo_label.py"),
        *options,
        "--out",
        str(tmp_path / "out2"),
    ]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    errors = [line for line in result.stderr.splitlines() if "rror" in line or "terminate" in line or "what()" in line]
    assert result.returncode == 0, "\n".join(errors[:20]) + result.stderr[-2000:]
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["written_per_process"] == [3, 2]  # every other image each, none twice
    assert summary["written"] == 5 and summary["failed"] == 0

    assert script_main("pseudo_label.py")([*options, "--out", str(tmp_path / "out1")]) == 0
    one = json.loads((tmp_path / "out1" / "report" / "metrics.json").read_text())
    two = json.loads((tmp_path / "out2" / "report" / "metrics.json").read_text())
    assert json.loads((tmp_path / "out1" / "summary.json").read_text())["num_processes"] == 1
    assert two["predictions"]["CRF"]["per_class"] == one["predictions"]["CRF"]["per_class"]
    assert two["predictions"]["CRF"]["num_scored"] == 5
    for name in os.listdir(tmp_path / "out1" / "crf"):
        np.testing.assert_array_equal(
            read_mask(tmp_path / "out1" / "crf" / name), read_mask(tmp_path / "out2" / "crf" / name)
        )

    def report_rows(out):  # report.html's rows: each process drew its share of the thumbnails, rank 0 the page
        html = (out / "report.html").read_text(encoding="utf-8")
        blob = re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1)
        rows = json.loads(blob)["rows"]
        assert all(all(row["thumbnails"]) and (out / row["thumbnails"][-1]).is_file() for row in rows)
        return {row["id"]: (row["status"], row["miou"], row["classes"], len(row["scores"])) for row in rows}

    assert (
        report_rows(tmp_path / "out2") == report_rows(tmp_path / "out1") and len(report_rows(tmp_path / "out1")) == 5
    )


def test_rerun_with_other_settings_is_refused_naming_the_change_and_overwrite_recomputes(
    tmp_path, model_and_processor
):
    model, processor = model_and_processor
    dataset = make_dataset()
    generate_pseudo_labels(model, dataset, tmp_path, tiny_config(num_overlays=0), image_processor=processor)
    first = {name: read_mask(tmp_path / "crf" / name) for name in os.listdir(tmp_path / "crf")}
    recorded = json.loads((tmp_path / "fingerprint.json").read_text())["fingerprint"]
    assert recorded["size"] == 32 and recorded["crf"]["bilateral_sxy"] == 67.0 and recorded["use_image_labels"]

    changes = {
        "size: 32 -> 48": tiny_config(size=48),
        "crf.bilateral_sxy: 67.0 -> 20.0": tiny_config(crf_config={"bilateral_sxy": 20.0}),
        "crf: ": tiny_config(crf=False),
        "use_image_labels: true -> false": tiny_config(use_image_labels=False),
        "flip: false -> true": tiny_config(flip=True),
        "crf_max_side: 2048 -> 24": tiny_config(crf_max_side=24),
    }
    for expected, config in changes.items():
        with pytest.raises(FingerprintMismatch, match=re.escape(expected)) as error:
            generate_pseudo_labels(model, dataset, tmp_path, config, image_processor=processor)
        assert "--overwrite" in str(error.value)
    # Another model: the same architecture and classes, other weights.
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.patch_classifier.weight.mul_(-1)
    with pytest.raises(FingerprintMismatch, match="model_weights: [0-9a-f]{12} -> [0-9a-f]{12}"):
        generate_pseudo_labels(other, dataset, tmp_path, tiny_config(), image_processor=processor)
    # Refusals change nothing on disk.
    assert {name: read_mask(tmp_path / "crf" / name) for name in os.listdir(tmp_path / "crf")}.keys() == first.keys()

    # Same settings: a resume; other worker counts and batch sizes do not change a mask.
    same = generate_pseudo_labels(
        model, dataset, tmp_path, tiny_config(crf_workers=0, batch_size=2), image_processor=processor
    )
    assert (same.written, same.already_done) == (0, 5)

    # --overwrite: the old masks go (also those of images no longer in the split) and the new settings apply.
    smaller = dataset.select(range(3))
    summary = generate_pseudo_labels(
        other, smaller, tmp_path, tiny_config(overwrite=True, crf=False, num_overlays=0), image_processor=processor
    )
    assert (summary.written, summary.already_done) == (3, 0)
    assert not (tmp_path / "crf").exists()
    assert sorted(os.listdir(tmp_path / "bpm")) == ["img_0.png", "img_1.png", "img_2.png"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["written"] == 3 and saved["config"]["crf"] is False
    assert json.loads((tmp_path / "fingerprint.json").read_text())["fingerprint"]["crf"] is None
    assert generate_pseudo_labels(other, smaller, tmp_path, tiny_config(crf=False)).already_done == 3


def test_masks_without_a_fingerprint_are_not_trusted(tmp_path, model_and_processor):
    model, processor = model_and_processor
    save_mask(np.zeros((26, 40), np.uint8), tmp_path / "bpm" / "img_0.png")  # made by an older version
    with pytest.raises(FingerprintMismatch, match="no record"):
        generate_pseudo_labels(model, make_dataset(2), tmp_path, tiny_config(), image_processor=processor)
    summary = generate_pseudo_labels(
        model, make_dataset(2), tmp_path, tiny_config(overwrite=True), image_processor=processor
    )
    assert summary.written == 2


def test_crf_max_side_bounds_the_crf_and_writes_masks_at_the_original_size(tmp_path, model_and_processor):
    model, processor = model_and_processor
    rng = np.random.default_rng(3)
    large = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    large[10:50, 20:70] = [220, 30, 30]
    extra = [{"id": "large", "image": Image.fromarray(large), "mask": None, "labels": [0, 1]}]
    dataset = make_dataset(3, extra_rows=extra)

    capped = generate_pseudo_labels(
        model, dataset, tmp_path / "capped", tiny_config(crf_max_side=45, num_overlays=0), image_processor=processor
    )
    full = generate_pseudo_labels(
        model, dataset, tmp_path / "full", tiny_config(crf_max_side=0, num_overlays=0), image_processor=processor
    )
    default = generate_pseudo_labels(model, dataset, tmp_path / "default", tiny_config(num_overlays=0))
    assert capped.written == full.written == default.written == 4
    for folder in ("bpm", "crf"):
        small = read_mask(tmp_path / "capped" / folder / "large.png")
        assert small.shape == (60, 90)  # written at the image's size...
        # ... from a 30x45 mask, upsampled by nearest: every 2x2 block holds one class id.
        np.testing.assert_array_equal(small, np.repeat(np.repeat(small[::2, ::2], 2, 0), 2, 1))
        assert not np.array_equal(small, read_mask(tmp_path / "full" / folder / "large.png"))
        for index in range(3):  # images under the cap are computed exactly as without one
            name = f"img_{index}.png"
            np.testing.assert_array_equal(
                read_mask(tmp_path / "capped" / folder / name), read_mask(tmp_path / "full" / folder / name)
            )
        for name in os.listdir(tmp_path / "full" / folder):  # the default cap (2048) changes nothing here
            np.testing.assert_array_equal(
                read_mask(tmp_path / "default" / folder / name), read_mask(tmp_path / "full" / folder / name)
            )


def test_inference_size_comes_from_the_checkpoint_unless_given(tmp_path, model_and_processor, caplog):
    model, processor = model_and_processor
    dataset = make_dataset(2)
    tuned = copy.deepcopy(model)
    tuned.config.inference_size = 48
    options = dict(size=None, crf=False, num_overlays=0)
    generate_pseudo_labels(tuned, dataset, tmp_path / "a", tiny_config(**options), image_processor=processor)
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["config"]["size"] == 48
    generate_pseudo_labels(tuned, dataset, tmp_path / "b", tiny_config(**{**options, "size": 32}))
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["config"]["size"] == 32

    from transformers import pipeline

    labeller = pipeline("weakly-supervised-pseudo-labelling", model=tuned, image_processor=processor)
    image = np.asarray(dataset[0]["image"])
    scores = {size: labeller(image, tags=[1], size=size, crf=False)["scores"] for size in (None, 48, 32)}
    assert scores[None] == scores[48] != scores[32]

    assert model.config.inference_size is None  # saved before the field existed
    with caplog.at_level(logging.WARNING, logger="cpfcte_hf.prediction.pseudo_labels"):
        assert resolve_inference_size(None, model.config) == 960
    assert "records no `inference_size`" in caplog.text
    assert resolve_inference_size(64, model.config) == 64


def test_training_presets_store_the_inference_size_in_the_checkpoint(tmp_path):
    from cpfcte_hf.stage1.train import ModelArguments, build_model
    from cpfcte_hf.utils.arguments import load_preset

    presets = {name: load_preset(name) for name in ("voc", "demo")}  # the packaged presets, inheritance applied
    assert presets["voc"]["inference_size"] == 960 and presets["voc"]["image_size"] == 384
    assert presets["demo"]["inference_size"] == 192 and presets["demo"]["image_size"] == 96
    tiny = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = build_model(ModelArguments(**tiny, intermediate_size=64, inference_size=192), CLASS_NAMES)
    model.save_pretrained(tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.inference_size == 192
    assert build_model(ModelArguments(**tiny, intermediate_size=64), CLASS_NAMES).config.inference_size == 960


def test_a_missing_local_model_fails_at_once_with_not_found(tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants

    for name in ("./modle", str(tmp_path / "modle"), "runs/demo/modle", "~/no-such-dir/m", "bad name!"):
        with pytest.raises(FileNotFoundError, match="not found"):
            load_model(name)

    # A bare name that is no directory here goes to the Hub once: unreachable (a closed port) or absent (404),
    # it is "not found" in well under a second, not after transformers' ~27 s of retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match="'modle' not found.*Hub cannot be reached"):
        load_model("modle")
    assert time.monotonic() - started < 5

    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(FileNotFoundError, match="'modle' not found.*no Hub model of that name"):
            load_model("modle")
    finally:
        server.shutdown()


def test_an_image_whose_tags_changed_is_recomputed_on_resume(tmp_path, model_and_processor):
    model, processor = model_and_processor
    dataset = make_dataset(3)
    generate_pseudo_labels(model, dataset, tmp_path, tiny_config(num_overlays=0), image_processor=processor)
    assert json.loads((tmp_path / "sources.json").read_text())["images"]["img_1"]["inputs"] == [0, 2]
    untouched = png_mtimes(tmp_path / "crf")

    retagged = make_dataset(3).map(lambda row: {"labels": [0, 3] if row["id"] == "img_1" else row["labels"]})
    summary = generate_pseudo_labels(model, retagged, tmp_path, tiny_config(num_overlays=0), image_processor=processor)
    assert (summary.written, summary.already_done, summary.changed) == (0, 2, ["img_1"])
    assert set(np.unique(read_mask(tmp_path / "crf" / "img_1.png"))) <= {0, 3}  # made with the new tags
    after = png_mtimes(tmp_path / "crf")
    assert {k: v for k, v in after.items() if k != "img_1.png"} == {
        k: v for k, v in untouched.items() if k != "img_1.png"
    }
    assert json.loads((tmp_path / "sources.json").read_text())["images"]["img_1"]["inputs"] == [0, 3]
