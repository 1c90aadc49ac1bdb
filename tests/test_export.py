"""`cpfcte-hf export` (issue 22): a labelled output's masks as a `datasets` dataset (save_to_disk, card, Hub folder), as
COCO JSON and as Label Studio tasks, read back pixel for pixel (by pycocotools, by Label Studio's own decoder); the
images left out by the labelling run's accounting; bad input refused in one line with nothing written.

One tiny `cpfcte-hf label` run of a folder of own photos is shared by the module: five tagged photos, one smaller than
a patch (fails), then one photo replaced (its mask is stale) and one rejected in review.json; one mask gets a block of
ignore (255) pixels. One export of it in all three formats, with a Hub dry run, is shared too.
"""

import contextlib
import io
import json
import os
import shutil
import sys

import datasets
import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.cli.commands.export import main as export_main
from cpfcte_hf.cli.commands.label import main as label_main
from cpfcte_hf.models.cpfcte.visualization import read_mask, save_mask
from cpfcte_hf.utils.fingerprint import read_fingerprint, record_fingerprint

from .test_own_photos import SHAPES, write_folder
from .utils import save_tiny_checkpoint


ROWS = [
    ("a.png", ["disc"]),
    ("b.png", ["square", "ring"]),
    ("c.png", ["cross"]),
    ("d.png", ["disc", "triangle"]),
    ("e.png", ["ring"]),
    ("tiny.png", ["disc"]),
]
FAILED, CHANGED, REJECTED, WITH_IGNORE = "tiny", "c", "d", "a"
EXPORTED = ["a", "b", "e"]


def run_export(*args) -> tuple[int, str, str]:
    """`cpfcte-hf export ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = export_main([*map(str, args), "--no_progress"])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_run")
    save_tiny_checkpoint(root / "model", num_labels=6, id2label=dict(enumerate(SHAPES)), classifier_init_std=50.0)
    photos = write_folder(root / "photos", ROWS)
    Image.new("RGB", (5, 5)).save(root / "photos" / "tiny.png")
    out = root / "out"
    args = ["--model", root / "model", "--dataset", "tagged", "--data_root", photos, "--output_dir", out]
    args += ["--dataset_option", f"cache_dir={root / 'cache'}", "--size", "32", "--crf_workers", "0", "--no_progress"]
    assert label_main(list(map(str, args))) == 1  # tiny.png failed, the others are written
    # After the run: a photo replaced (its mask is stale), a mask rejected by a reviewer, ignore pixels in a mask.
    Image.fromarray(np.full((28, 36, 3), 200, np.uint8)).save(root / "photos" / f"{CHANGED}.png")
    review = {"format": "cpfcte-hf-review", "version": 1, "decisions": {
        REJECTED: {"decision": "reject", "time": "2026-12-02T15:00:00Z"},
        "b": {"decision": "accept", "time": "2026-12-02T15:00:01Z"}}}  # fmt: skip
    (out / "review.json").write_text(json.dumps(review))
    mask = read_mask(out / "crf" / f"{WITH_IGNORE}.png")
    mask[2:6, 3:9] = 255
    save_mask(mask, out / "crf" / f"{WITH_IGNORE}.png")
    return {"root": root, "out": out, "photos": root / "photos", "cache": root / "cache"}


@pytest.fixture(scope="module")
def exported(labelled):
    root = labelled["root"]
    status, stdout, stderr = run_export(
        "--labels", labelled["out"], "--format", "datasets", "coco", "labelstudio", "--output_dir", root / "export",
        "--dry_run", root / "hub", "--dataset_option", f"cache_dir={labelled['cache']}",
    )  # fmt: skip
    assert status == 0, stderr
    return {"export": root / "export", "hub": root / "hub", "stdout": stdout}


def expected_mask(labelled, image_id) -> np.ndarray:
    return read_mask(labelled["out"] / "crf" / f"{image_id}.png")


# ------------------------------------------------------------------------------------------------ round trips


def test_the_datasets_export_loads_with_load_from_disk_and_each_label_is_its_mask(labelled, exported):
    folder = exported["export"]
    loaded = datasets.load_from_disk(str(folder))
    assert list(loaded) == ["train"]
    split = loaded["train"]
    assert sorted(split["id"]) == EXPORTED
    assert isinstance(split.features["image"], datasets.Image) and isinstance(split.features["label"], datasets.Image)
    assert split.features["classes"].feature.names == SHAPES
    for row in split:
        mask = expected_mask(labelled, row["id"])
        assert np.array_equal(np.asarray(row["label"]), mask), row["id"]
        assert sorted(row["classes"]) == sorted(set(np.unique(mask).tolist()) - {255})
        photo = Image.open(labelled["photos"] / f"{row['id']}.png").convert("RGB")
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(photo))
    assert 255 in np.asarray(split[split["id"].index(WITH_IGNORE)]["label"])  # ignore pixels kept as they are
    assert json.loads((folder / "id2label.json").read_text()) == {str(i): name for i, name in enumerate(SHAPES)}
    (folder.parent / "plain").mkdir()  # the export folder has the permissions of any new folder (not mkdtemp's 0700)
    assert os.stat(folder).st_mode == os.stat(folder.parent / "plain").st_mode


def test_the_dataset_card_names_the_classes_how_the_masks_were_made_and_what_was_left_out(exported):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported["export"] / "README.md")
    assert card.data.task_categories == ["image-segmentation"]
    assert card.data.task_ids == ["semantic-segmentation"]
    text = card.text
    for name in SHAPES:
        assert f"| {name} |" in text
    assert "CRF masks" in text and "bilateral_sxy 67.0" in text and "| size | 32 |" in text
    assert "1 failed when labelled" in text and "1 rejected in review" in text and "1 changed since" in text
    assert "not measured (no ground truth in the split)" in text  # a folder of photos has no ground truth
    assert str(exported["export"].parent) not in text  # no local path on the card


def test_the_coco_export_reads_back_into_the_same_masks_with_pycocotools(labelled, exported):
    from pycocotools.coco import COCO

    folder = exported["export"]
    coco = COCO(str(folder / "train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == SHAPES[1:]  # no background category
    images = coco.loadImgs(coco.getImgIds())
    assert sorted(image["cpfcte_id"] for image in images) == EXPORTED
    for image in images:
        mask = expected_mask(labelled, image["cpfcte_id"])
        assert (image["height"], image["width"]) == mask.shape
        assert (folder / "images" / "train" / image["file_name"]).read_bytes() == (
            labelled["photos"] / image["file_name"]
        ).read_bytes()
        rebuilt = np.zeros_like(mask)  # pixels under no annotation: background (or ignore)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len({a["category_id"] for a in annotations}) == len(annotations)  # one annotation per class
        for annotation in annotations:
            binary = coco.annToMask(annotation)
            assert annotation["iscrowd"] == 0 and annotation["area"] == int(binary.sum())
            x, y, w, h = annotation["bbox"]
            ys, xs = np.nonzero(binary)
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            assert not rebuilt[binary == 1].any()  # annotations do not overlap
            rebuilt[binary == 1] = annotation["category_id"]
        known = mask != 255
        assert np.array_equal(rebuilt[known], mask[known]), image["cpfcte_id"]
        assert not rebuilt[~known].any()  # ignore pixels are in no annotation
    assert (mask_ids := {a["category_id"] for a in coco.dataset["annotations"]}) and 0 not in mask_ids


def test_the_labelstudio_export_decodes_into_the_same_masks_with_label_studios_own_decoder(labelled, exported):
    from label_studio_converter.brush import decode_rle
    from label_studio_tools.core.label_config import parse_config

    folder = exported["export"]
    interface = parse_config((folder / "labelstudio" / "config.xml").read_text())  # Label Studio's own parser
    assert interface["label"]["type"] == "BrushLabels" and interface["label"]["to_name"] == ["image"]
    assert interface["label"]["labels"] == SHAPES[1:]  # no background label
    assert interface["label"]["inputs"] == [{"type": "Image", "value": "image"}]
    tasks = json.loads((folder / "labelstudio" / "train.json").read_text())
    assert sorted(task["data"]["cpfcte_id"] for task in tasks) == EXPORTED
    for task in tasks:
        image_id = task["data"]["cpfcte_id"]
        mask = expected_mask(labelled, image_id)
        address = task["data"]["image"]
        assert address == f"/data/local-files/?d=images/train/{image_id}.png"  # under the export folder
        assert (folder / address.split("?d=")[1]).read_bytes() == (labelled["photos"] / f"{image_id}.png").read_bytes()
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "cpfcte_hf CRF pseudo-labels"
        rebuilt = np.zeros_like(mask)
        regions = prediction["result"]
        assert len({region["id"] for region in regions}) == len(regions)
        for region in regions:
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "label", "image")
            assert (region["original_height"], region["original_width"]) == mask.shape
            (name,) = region["value"]["brushlabels"]
            pixels = np.asarray(decode_rle(region["value"]["rle"])).reshape(*mask.shape, 4)
            assert (pixels == pixels[..., :1]).all()  # the 4 channels of one grey mask
            binary = pixels[..., 3] == 255
            assert binary.any() and not rebuilt[binary].any()  # regions do not overlap
            rebuilt[binary] = SHAPES.index(name)
        known = mask != 255
        assert np.array_equal(rebuilt[known], mask[known]), image_id
        assert not rebuilt[~known].any()  # ignore pixels are in no region
    assert json.loads((folder / "export_summary.json").read_text())["splits"]["train"]["labelstudio"] == (
        "labelstudio/train.json"
    )


def test_labelstudio_image_addresses_follow_the_template_and_a_bad_template_is_one_line(tmp_path, labelled):
    common = ["--labels", labelled["out"], "--dataset_option", f"cache_dir={labelled['cache']}"]
    status, _, stderr = run_export(*common, "--format", "labelstudio", "--output_dir", tmp_path / "a",
                                   "--image_url", "https://bucket.example/{split}/{file_name}")  # fmt: skip
    assert status == 0, stderr
    tasks = json.loads((tmp_path / "a" / "labelstudio" / "train.json").read_text())
    assert {task["data"]["image"] for task in tasks} == {f"https://bucket.example/train/{i}.png" for i in EXPORTED}
    for bad, says in [("https://x/{name}", "unknown field name"), ("https://x/{split}", "no {file_name}")]:
        status, _, stderr = run_export(*common, "--format", "labelstudio", "--output_dir", tmp_path / "b",
                                       "--image_url", bad)  # fmt: skip
        assert status == 2 and says in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not (tmp_path / "b").exists()
    status, _, stderr = run_export(*common, "--format", "coco", "--output_dir", tmp_path / "c", "--image_url", "x")
    assert status == 2 and "add --format labelstudio" in stderr and not (tmp_path / "c").exists()


def test_labelstudio_image_addresses_quote_what_would_break_a_url():
    from cpfcte_hf.export.to_labelstudio import DEFAULT_IMAGE_URL, image_address

    assert image_address(DEFAULT_IMAGE_URL, "train", "my photo #2?.jpg") == (
        "/data/local-files/?d=images/train/my%20photo%20%232%3F.jpg"
    )
    assert image_address("https://x.example/{split}/{file_name}", "val", "a/b.png") == "https://x.example/val/a/b.png"


def test_labelstudio_without_its_encoder_installed_is_one_line_naming_the_extra(tmp_path, labelled, monkeypatch):
    monkeypatch.setitem(sys.modules, "label_studio_converter", None)  # as if not installed: imports of it fail
    status, _, stderr = run_export(
        "--labels", labelled["out"], "--format", "labelstudio", "--output_dir", tmp_path / "x"
    )
    assert status == 2 and "pip install 'cpfcte_hf[labelstudio]'" in stderr and not (tmp_path / "x").exists()


def test_the_hub_dry_run_folder_loads_with_load_dataset(labelled, exported):
    hub = exported["hub"]
    assert sorted(p.name for p in (hub / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(str(hub), cache_dir=str(labelled["root"] / "hub_cache"))
    split = loaded["train"]
    assert sorted(split["id"]) == EXPORTED and split.features["classes"].feature.names == SHAPES
    for row in split:
        assert np.array_equal(np.asarray(row["label"]), expected_mask(labelled, row["id"]))
    assert json.loads((hub / "id2label.json").read_text())["5"] == "cross"
    card = (hub / "README.md").read_text()
    assert "configs:" in card and "path: data/train-*" in card and "num_examples: 3" in card
    assert str(labelled["root"]) not in (hub / "export_summary.json").read_text()  # no local paths in the repo


# ------------------------------------------------------------------------------------------------ accounting


def test_left_out_images_are_counted_with_their_reasons_printed_and_recorded(exported):
    record = json.loads((exported["export"] / "export_summary.json").read_text())
    train = record["splits"]["train"]
    assert train["exported"] == len(EXPORTED) and train["left_out"] == 3
    assert train["left_out_by_reason"] == {"failed": 1, "changed": 1, "rejected": 1}
    reasons = {entry["id"]: entry["reason"] for entry in train["left_out_images"]}
    assert reasons == {FAILED: "failed", CHANGED: "changed", REJECTED: "rejected"}
    printed = exported["stdout"]
    assert "3 image(s) exported" in printed and "3 left out" in printed
    assert f"left out: {REJECTED}: rejected in review" in printed and f"left out: {CHANGED}: changed since" in printed


# ------------------------------------------------------------------------------------------------- bad input


def assert_refused(tmp_path, status, stderr, names):
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert str(names) in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left


def copy_of(labelled, tmp_path):
    copy = tmp_path / "labels"
    shutil.copytree(labelled["out"], copy)
    return copy


def test_a_folder_that_is_not_a_labelled_output_is_refused(tmp_path, labelled):
    (tmp_path / "masks").mkdir()
    save_mask(np.zeros((4, 4), np.uint8), tmp_path / "masks" / "x.png")
    status, _, stderr = run_export("--labels", tmp_path / "masks", "--output_dir", tmp_path / "out")
    assert_refused(tmp_path, status, stderr, tmp_path / "masks" / "summary.json")


def test_masks_of_other_settings_than_the_folder_says_are_refused(tmp_path, labelled):
    copy = copy_of(labelled, tmp_path)
    fingerprint = read_fingerprint(copy)
    fingerprint["crf"]["bilateral_sxy"] = 50.0  # the masks' record says another CRF than summary.json
    record_fingerprint(copy, fingerprint)
    args = ["--dataset_option", f"cache_dir={labelled['cache']}", "--output_dir", tmp_path / "out"]
    status, _, stderr = run_export("--labels", copy, *args)
    assert_refused(tmp_path, status, stderr, copy / "fingerprint.json")
    assert "crf.bilateral_sxy" in stderr


def test_a_mask_value_beyond_the_classes_is_refused_naming_the_mask(tmp_path, labelled):
    copy = copy_of(labelled, tmp_path)
    mask = read_mask(copy / "crf" / "e.png")
    mask[0, 0] = len(SHAPES) + 3  # the class list (6 classes) disagrees with this mask
    save_mask(mask, copy / "crf" / "e.png")
    args = ["--format", "datasets", "coco", "--output_dir", tmp_path / "out"]
    status, _, stderr = run_export("--labels", copy, "--dataset_option", f"cache_dir={labelled['cache']}", *args)
    assert_refused(tmp_path, status, stderr, copy / "crf" / "e.png")
    assert "beyond the 6 classes" in stderr


def test_an_output_folder_in_the_way_is_refused_and_a_push_failure_is_one_line(tmp_path, labelled, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    common = ["--labels", labelled["out"], "--dataset_option", f"cache_dir={labelled['cache']}"]
    status, _, stderr = run_export(*common, "--output_dir", tmp_path / "out", "--overwrite")
    assert status == 2 and "exists and is not empty" in stderr and (tmp_path / "out" / "notes.txt").is_file()

    # The push is the real API call: here the Hub is an address nothing listens on, and the error is one line.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    status, _, stderr = run_export(*common, "--output_dir", tmp_path / "pushed", "--push_to_hub", "user/masks")
    assert status == 3 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: Could not push to http://127.0.0.1:9/datasets/user/masks")
    assert datasets.load_from_disk(str(tmp_path / "pushed"))["train"].num_rows == len(EXPORTED)  # written first


# ------------------------------------------------------------------------------------------------ stage 2


def test_stage_two_predictions_export_with_their_scores_on_the_card(tmp_path):
    import torch

    from cpfcte_hf.data.shapes import load_shapes
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.prediction.segment import MultiScaleEvalConfig, predict_split

    from .deeplab_helpers import tiny_deeplab_config

    options = {"num_val": 3, "image_size": 40, "num_classes": 2, "cache_dir": str(tmp_path / "cache")}
    val = load_shapes("val", **options)
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    config = MultiScaleEvalConfig(scales=(1.0,), crf=True, crf_workers=0, num_overlays=0, progress=False)
    run = tmp_path / "stage2"
    predict_split(model, val, run / "predictions" / "val", config, dataset_name="shapes", split="val")
    pairs = [f"{key}={value}" for key, value in options.items()]
    status, stdout, stderr = run_export(
        "--labels", run, "--dataset_option", *pairs, "--output_dir", tmp_path / "out"
    )  # a stage-2 output folder: its one predictions/<split>/
    assert status == 0, stderr
    loaded = datasets.load_from_disk(str(tmp_path / "out"))["val"]
    assert loaded.num_rows == 3 and "MS+CRF masks" in stdout
    for row in loaded:
        mask = read_mask(run / "predictions" / "val" / "ms_crf" / f"{row['id']}.png")
        assert np.array_equal(np.asarray(row["label"]), mask)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "stage 2" in card and "MS+CRF mIoU against the ground truth (3 images)" in card
    assert os.path.isfile(tmp_path / "out" / "export_summary.json")


# ------------------------------------------------------------------------------------------------ cpfcte-hf run


@pytest.mark.slow
def test_run_exports_the_pseudo_labels_after_labelling_and_records_it(tmp_path):
    import subprocess
    import sys

    from .test_demo import REPO, TINY_PRESET
    from .utils import subprocess_env

    (tmp_path / "tiny.yaml").write_text(TINY_PRESET)
    command = [
        sys.executable, "-m", "cpfcte_hf", "run", "--config", str(tmp_path / "tiny.yaml"), "--output_dir",
        str(tmp_path / "run"), "--crf_workers", "0", "--steps", "data", "stage1", "pseudo_labels", "export",
        "--export", "datasets", "coco", "labelstudio", "--override", "label.scales=[1.0]", "label.flip=false",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "run_summary.json").read_text())
    assert list(summary["steps"]) == ["data", "stage1", "pseudo_labels", "export"]
    assert summary["steps"]["export"]["status"] == "ran"
    assert summary["export"]["formats"] == ["datasets", "coco", "labelstudio"]
    assert summary["export"]["splits"]["train"]["exported"] == 24
    loaded = datasets.load_from_disk(str(run / "export"))["train"]
    assert loaded.num_rows == 24 and (run / "export" / "train.json").is_file()
    assert len(json.loads((run / "export" / "labelstudio" / "train.json").read_text())) == 24
    row = loaded[0]
    assert np.array_equal(np.asarray(row["label"]), read_mask(run / "pseudo_labels" / "crf" / f"{row['id']}.png"))
    assert "CRF mIoU against the ground truth (24 images)" in (run / "export" / "README.md").read_text()


def test_the_label_studio_check_script_says_what_is_missing_in_one_line(tmp_path, exported):
    """`scripts/check_label_studio.py` (run by hand against a real Label Studio, README) starts nothing without an
    executable or a Label Studio export."""
    import subprocess

    from .test_demo import REPO
    from .utils import subprocess_env

    script = [sys.executable, "scripts/check_label_studio.py", "--split", "train", "--masks", str(tmp_path)]
    cases = [
        (["--export", str(exported["export"]), "--label_studio", str(tmp_path / "none")], "not an executable"),
        (["--export", str(tmp_path), "--label_studio", sys.executable], "not found; --export takes"),
    ]
    for extra, says in cases:
        result = subprocess.run(script + extra, capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
        assert result.returncode == 2 and says in result.stderr, result.stderr


def test_run_export_labelstudio_without_its_encoder_stops_before_the_first_step(
    tmp_path, monkeypatch, capsys, clean_openmp_environment
):
    from cpfcte_hf.workflows.run import run_from_argv

    monkeypatch.setitem(sys.modules, "label_studio_converter", None)  # as if not installed
    status, _ = run_from_argv(["--config", "demo", "--output_dir", str(tmp_path / "run"), "--export", "labelstudio"])
    assert status == 2 and "--export labelstudio encodes the masks" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # stopped at the front door: no step ran, nothing written
