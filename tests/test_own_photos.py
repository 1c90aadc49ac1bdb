"""Your own tagged photos -> masks: classes by name, paths, accounting, exit codes (issue 11)."""

import csv
import json
import os
import runpy

import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.data import load_tagged_images, loader_report
from cpfcte_hf.models.cpfcte.class_names import map_class_names, normalize_class_name
from cpfcte_hf.models.cpfcte.visualization import read_mask
from cpfcte_hf.prediction.config import PseudoLabelConfig
from cpfcte_hf.prediction.pseudo_labels import generate_pseudo_labels
from cpfcte_hf.utils.checkpoints import load_model

from .utils import save_tiny_checkpoint


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = ["background", "disc", "square", "triangle", "ring", "cross"]  # the demo model's classes


def script_main(name):
    return runpy.run_path(os.path.join(REPO, "scripts", name))["main"]


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shapes_model")
    save_tiny_checkpoint(directory, num_labels=6, id2label=dict(enumerate(SHAPES)), classifier_init_std=50.0)
    return str(directory)


def write_folder(root, rows, extra_lines=()):
    """Images named by `rows` [(file name, tags)], and `tags.csv` (`file_name,tags`, tags joined by `;`)."""
    rng = np.random.default_rng(0)
    for name, _ in rows:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 36, 3), dtype=np.uint8)).save(path)
    with open(os.path.join(root, "tags.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "tags"])
        for name, tags in rows:
            writer.writerow([name, ";".join(tags)])
        for line in extra_lines:
            handle.write(line + "\n")
    return str(root)


# All five foreground classes; sorted, they are cross, disc, ring, square, triangle: an id-based mapping gives the
# image tagged `cross` the id of `disc` (1) instead of cross's 5.
ALL_CLASSES = [
    ("disc.png", ["disc"]),
    ("square.png", ["square"]),
    ("triangle.png", ["triangle"]),
    ("ring.png", ["Ring"]),
    ("cats/cross 01.png", [" Cross "]),  # sub-folder, space, spelling
    ("./crôss.png", ["cross"]),  # ./ and non-ASCII
]


def pseudo_label_args(model, folder, out):
    return [
        "--model",
        model,
        "--dataset",
        "tagged",
        "--data-root",
        folder,
        "--dataset-option",
        f"cache_dir={os.path.join(os.path.dirname(out), 'cache')}",
        "--out",
        out,
        "--size",
        "32",
        "--crf-workers",
        "0",
        "--no-progress",
    ]


def test_one_normalisation():
    assert normalize_class_name(" Disc ") == normalize_class_name("disc") == "disc"
    assert map_class_names(["background", "Cross", "disc"], dict(enumerate(SHAPES))) == [0, 5, 1]
    with pytest.raises(ValueError, match=r"Classes \['dog'\] of the dataset are not classes of the model.*cross"):
        map_class_names(["background", "dog"], dict(enumerate(SHAPES)))


def test_tag_cross_is_masked_with_the_id_of_cross(tmp_path, shapes_model, capsys):
    folder = write_folder(tmp_path / "photos", ALL_CLASSES, extra_lines=[",", ""])  # a trailing `,` row, a blank
    Image.new("RGB", (30, 30)).save(tmp_path / "photos" / "untagged.jpg")
    out = str(tmp_path / "out")
    assert script_main("pseudo_label.py")(pseudo_label_args(shapes_model, folder, out)) == 0
    printed = capsys.readouterr().out
    assert "6 image(s): 6 written, 0 already done, 0 failed, 0 skipped by the loader" in printed
    assert "untagged: untagged.jpg" in printed

    expected = {"disc": 1, "square": 2, "triangle": 3, "ring": 4, "cats/cross 01": 5, "crôss": 5}
    for image_id, class_id in expected.items():
        for folder_name in ("bpm", "crf"):
            assert os.path.isfile(os.path.join(out, folder_name, f"{image_id}.png")), (folder_name, image_id)
        values = set(np.unique(read_mask(os.path.join(out, "bpm", f"{image_id}.png"))).tolist())
        assert values <= {0, class_id} and class_id in values, (image_id, values)
    summary = json.loads(open(os.path.join(out, "summary.json"), encoding="utf-8").read())
    assert summary["untagged"] == ["untagged.jpg"] and summary["skipped"] == [] and summary["total"] == 6

    # The Python route: the loader alone names the classes by the sorted tags; pseudo-labelling maps them by name.
    dataset = load_tagged_images(folder, cache_dir=str(tmp_path / "cache2"))
    assert dataset.features["labels"].feature.names == ["background", "Cross", "disc", "Ring", "square", "triangle"]
    assert dict(zip(dataset["id"], dataset["labels"]))["cats/cross 01"] == [0, 1]
    model, processor = load_model(shapes_model)
    config = PseudoLabelConfig(size=32, crf=False, crf_workers=0, progress=False)
    generate_pseudo_labels(model, dataset, tmp_path / "python", config, image_processor=processor)
    for image_id in expected:
        python_mask = read_mask(tmp_path / "python" / "bpm" / f"{image_id}.png")
        np.testing.assert_array_equal(python_mask, read_mask(os.path.join(out, "bpm", f"{image_id}.png")))
    # Given the model, the loader uses its ids directly.
    by_model = load_tagged_images(folder, class_names=model, cache_dir=str(tmp_path / "cache3"))
    assert by_model.features["labels"].feature.names == SHAPES
    assert dict(zip(by_model["id"], by_model["labels"]))["crôss"] == [0, 5]


@pytest.mark.parametrize("out_name", ["masks", "."])  # --out inside --data-root, or --out = --data-root
def test_masks_written_inside_the_photo_folder_are_not_untagged_photos_on_a_rerun(
    tmp_path, shapes_model, capsys, out_name
):
    folder = write_folder(tmp_path / "photos", [("disc.png", ["disc"]), ("ring.png", ["ring"])])
    Image.new("RGB", (30, 30)).save(tmp_path / "photos" / "untagged.jpg")
    out = os.path.normpath(os.path.join(folder, out_name))
    args = pseudo_label_args(shapes_model, folder, out)
    args[args.index("--dataset-option") + 1] = f"cache_dir={tmp_path / 'cache'}"
    for run, done in ((1, "2 written, 0 already done"), (2, "0 written, 2 already done")):
        assert script_main("pseudo_label.py")(args) == 0, run
        printed = capsys.readouterr().out
        assert done in printed and "1 image file(s) in the folder have no tags row" in printed, (run, printed)
        summary = json.loads(open(os.path.join(out, "summary.json"), encoding="utf-8").read())
        assert summary["untagged"] == ["untagged.jpg"], run
    assert os.path.isfile(os.path.join(out, "crf", "disc.png"))
    if out_name == ".":
        return
    # The Python route: the loader lists the masks unless told the folder is an output.
    listed = loader_report(load_tagged_images(folder, cache_dir=str(tmp_path / "cache")))["untagged"]
    assert "masks/bpm/disc.png" in listed and "untagged.jpg" in listed
    report = loader_report(load_tagged_images(folder, cache_dir=str(tmp_path / "cache"), exclude=out))
    assert report["untagged"] == ["untagged.jpg"]


def test_a_folder_covering_fewer_classes_works(tmp_path, shapes_model):
    folder = write_folder(tmp_path / "photos", [("a.png", ["cross"]), ("b.png", ["disc", "cross"]), ("c.png", [])])
    out = str(tmp_path / "out")
    assert script_main("pseudo_label.py")([*pseudo_label_args(shapes_model, folder, out), "--no-crf"]) == 0
    assert set(np.unique(read_mask(os.path.join(out, "bpm", "a.png")))) <= {0, 5}
    assert set(np.unique(read_mask(os.path.join(out, "bpm", "b.png")))) <= {0, 1, 5}
    assert set(np.unique(read_mask(os.path.join(out, "bpm", "c.png")))) == {0}

    dataset = load_tagged_images(folder, cache_dir=str(tmp_path / "cache2"))  # background, cross, disc
    model, processor = load_model(shapes_model)
    config = PseudoLabelConfig(size=32, crf=False, crf_workers=0, progress=False)
    generate_pseudo_labels(model, dataset, tmp_path / "python", config, image_processor=processor)
    for name in ("a", "b"):
        np.testing.assert_array_equal(
            read_mask(tmp_path / "python" / "bpm" / f"{name}.png"), read_mask(os.path.join(out, "bpm", f"{name}.png"))
        )


def test_an_unknown_tag_names_file_line_tag_and_the_model_classes(tmp_path, shapes_model, capsys):
    folder = write_folder(tmp_path / "photos", [("a.png", ["disc"]), ("b.png", ["disk"])])
    out = str(tmp_path / "out")
    assert script_main("pseudo_label.py")(pseudo_label_args(shapes_model, folder, out)) == 2
    error = capsys.readouterr().err
    assert "tags.csv, line 3: unknown class tag(s) ['disk']" in error
    assert str(SHAPES) in error
    assert not os.path.exists(os.path.join(out, "bpm", "a.png"))


def test_two_images_with_the_same_mask_are_refused_up_front(tmp_path, shapes_model, capsys):
    folder = write_folder(tmp_path / "photos", [("a.png", ["disc"]), ("a.jpg", ["cross"])])
    out = str(tmp_path / "out")
    assert script_main("pseudo_label.py")(pseudo_label_args(shapes_model, folder, out)) == 2
    error = capsys.readouterr().err
    assert "'a.jpg' and 'a.png'" in error and "same mask" in error
    assert not os.path.exists(os.path.join(out, "bpm"))


def test_failed_and_skipped_images_are_accounted_for_and_exit_1(tmp_path, shapes_model, capsys):
    rows = [("good.png", ["disc"]), ("tiny.png", ["disc"]), ("broken.jpg", ["cross"]), ("empty.jpg", ["ring"])]
    folder = write_folder(tmp_path / "photos", rows)
    Image.new("RGB", (4, 4)).save(tmp_path / "photos" / "tiny.png")  # smaller than one 8x8 patch: fails
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")  # a zero-byte file
    out = str(tmp_path / "out")
    with pytest.warns(UserWarning, match="Skipped 2 of 4"):
        status = script_main("pseudo_label.py")([*pseudo_label_args(shapes_model, folder, out), "--no-crf"])
    assert status == 1
    printed = capsys.readouterr().out
    assert "4 image(s): 1 written, 0 already done, 1 failed, 2 skipped by the loader" in printed
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["total"] == 4 and summary["written"] == 1 and summary["failed"] == 1
    assert {s["id"] for s in summary["skipped"]} == {"broken", "empty"}
    assert all("unreadable image" in s["reason"] for s in summary["skipped"])
    assert os.listdir(os.path.join(out, "bpm")) == ["good.png"]


def test_evaluate_refuses_a_missing_or_empty_prediction_dir_and_creates_nothing(tmp_path, capsys):
    evaluate = script_main("evaluate.py")
    typo = tmp_path / "typo_dir"
    assert evaluate(["--pred", str(typo), "--dataset", "shapes"]) == 2
    assert "Prediction directory" in capsys.readouterr().err and not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate(["--pred", str(empty), "--dataset", "shapes"]) == 2
    assert "holds no mask" in capsys.readouterr().err and os.listdir(empty) == []


def test_loader_report_lists_untagged_and_blank_rows_do_not_abort(tmp_path):
    folder = write_folder(tmp_path / "photos", [("./good.png", ["Disc"])], extra_lines=[",", ",,"])
    Image.new("RGB", (30, 30)).save(tmp_path / "photos" / "other.png")
    dataset = load_tagged_images(folder, class_names=["disc"], cache_dir=str(tmp_path / "cache"))
    assert dataset["id"] == ["good"] and dataset["labels"] == [[0, 1]]
    assert loader_report(dataset) == {"skipped": [], "untagged": ["other.png"]}
    with open(os.path.join(folder, "tags.csv"), "a") as handle:
        handle.write(",disc\n")
    with pytest.raises(ValueError, match=r"tags\.csv, line 5: empty file name"):
        load_tagged_images(folder, cache_dir=str(tmp_path / "cache"))


def test_exif_orientation_is_the_displayed_one_in_loader_and_pseudo_labels(tmp_path, shapes_model):
    """A real JPEG stored 40x24 with EXIF orientation 6 (displayed 24x40), and a VOC mask drawn as displayed."""
    from cpfcte_hf.data import load_voc

    from .data_trees import write_voc_tree

    tree = write_voc_tree(tmp_path / "voc", splits={"train_aug": 2, "val": 1}, class_names=SHAPES)
    image_id = tree["ids"]["train_aug"][0]
    stored = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)  # (H, W) as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image_path = tree["images"][image_id]
    Image.fromarray(stored).save(image_path, format="JPEG", exif=exif.tobytes())
    mask = np.zeros((40, 24), np.uint8)  # as displayed: 24 wide, 40 high
    mask[5:30, 4:20] = 5
    mask_path = os.path.join(tree["voc_dir"], "SegmentationClassAug", f"{image_id}.png")
    Image.fromarray(mask, mode="L").save(mask_path)
    with Image.open(image_path) as check:
        assert check.size == (40, 24) and check.getexif()[0x0112] == 6

    dataset = load_voc(tree["root"], "train_aug", cache_dir=str(tmp_path / "cache"))
    assert image_id in dataset["id"]  # not skipped as "mask 24x40, image 40x24"
    row = dataset[dataset["id"].index(image_id)]
    assert row["image"].size == row["mask"].size == (24, 40)

    model, processor = load_model(shapes_model)
    config = PseudoLabelConfig(size=32, crf=False, crf_workers=0, progress=False, num_overlays=0)
    summary = generate_pseudo_labels(model, dataset, tmp_path / "out", config, image_processor=processor)
    assert summary.failed == 0 and summary.report["predictions"]["BPM"]["num_scored"] == 2
    assert read_mask(tmp_path / "out" / "bpm" / f"{image_id}.png").shape == (40, 24)


def test_training_on_a_tagged_folder_does_not_evaluate_on_its_training_images(tmp_path, caplog):
    import datasets

    from cpfcte_hf.stage1.train import DataArguments, build_datasets, with_masks_only

    folder = write_folder(tmp_path / "photos", [("a.png", ["disc"]), ("b.png", ["cross"])])
    data_args = DataArguments(
        dataset="tagged", data_root=folder, train_split="train", eval_split="val", cache_dir=str(tmp_path / "cache")
    )
    train, evaluation = build_datasets(data_args)
    assert len(train) == 2 and evaluation is None
    assert caplog.text.count("has no ground-truth masks: no evaluation during training") == 1

    # Where only some rows have masks, only those are evaluated.
    mask = Image.fromarray(np.zeros((8, 8), np.uint8))
    features = datasets.Features({"id": datasets.Value("string"), "mask": datasets.Image()})
    partial = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "mask": [mask, None, mask]}, features=features)
    assert with_masks_only(partial, "split")["id"] == ["a", "c"]
    assert with_masks_only(partial.select([1]), "split") is None


def test_a_dataset_in_another_class_order_is_mapped_by_name_for_labels_and_ground_truth(tmp_path, shapes_model):
    from cpfcte_hf.data import load_voc

    from .data_trees import write_voc_tree

    sorted_names = ["background", "cross", "disc", "ring", "square", "triangle"]  # e.g. classes named by sorted tags
    tree = write_voc_tree(tmp_path / "voc", splits={"train_aug": 3, "val": 1}, class_names=sorted_names)
    dataset = load_voc(tree["root"], "train_aug", cache_dir=str(tmp_path / "cache"))
    model, processor = load_model(shapes_model)
    config = PseudoLabelConfig(size=32, crf=False, crf_workers=0, progress=False, num_overlays=0)
    summary = generate_pseudo_labels(model, dataset, tmp_path / "out", config, image_processor=processor)
    report = summary.report
    assert report["class_names"] == SHAPES
    per_class = {row["class_name"]: row["gt_pixels"] for row in report["predictions"]["BPM"]["per_class"]}
    for dataset_id, name in enumerate(sorted_names):
        expected = sum(int((tree["masks"][i] == dataset_id).sum()) for i in tree["ids"]["train_aug"])
        assert per_class[name] == expected, name
    for image_id in tree["ids"]["train_aug"]:  # labels masked with the model's ids of the image's classes
        tags = {sorted_names[c] for c in tree["labels"][image_id]}
        allowed = {SHAPES.index(name) for name in tags}
        assert set(np.unique(read_mask(tmp_path / "out" / "bpm" / f"{image_id}.png")).tolist()) <= allowed
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["dataset_class_mapping"] == {
        "background": 0,
        "cross": 5,
        "disc": 1,
        "ring": 4,
        "square": 2,
        "triangle": 3,
    }


def test_pseudo_label_help_lists_tagged(capsys):
    with pytest.raises(SystemExit):
        script_main("pseudo_label.py")(["--help"])
    assert "tagged (your own photos" in " ".join(capsys.readouterr().out.split())  # argparse wraps the help


def test_a_voc_mask_of_another_size_is_accounted_for_in_the_summary(tmp_path, shapes_model):
    from cpfcte_hf.data import load_voc

    from .data_trees import write_voc_tree

    tree = write_voc_tree(tmp_path / "voc", splits={"train_aug": 3, "val": 1}, class_names=SHAPES)
    bad = tree["ids"]["train_aug"][1]
    Image.new("L", (7, 5)).save(os.path.join(tree["voc_dir"], "SegmentationClassAug", f"{bad}.png"))
    with pytest.warns(UserWarning, match="mask size differs"):
        dataset = load_voc(tree["root"], "train_aug", cache_dir=str(tmp_path / "cache"))
    model, processor = load_model(shapes_model)
    config = PseudoLabelConfig(size=32, crf=False, crf_workers=0, progress=False, num_overlays=0)
    summary = generate_pseudo_labels(model, dataset, tmp_path / "out", config, image_processor=processor)
    assert (summary.total, summary.written, summary.exit_status) == (3, 2, 1)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["total"] == 3 and saved["skipped_by_loader"] == 1
    assert saved["skipped"][0]["id"] == bad and "mask size differs from image" in saved["skipped"][0]["reason"]
