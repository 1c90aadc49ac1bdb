"""COCO loader: ToCo layout and official instances JSON (painting, mapping, filters, resumable masks)."""

import json
import os

import numpy as np
import pytest

from cpfcte_hf.data import COCO_CLASSES, class_names_of, load_coco
from tests.data_trees import write_coco_instances_tree, write_coco_toco_tree


def _cache(tmp_path):
    return str(tmp_path / "cache")


def test_coco_classes_are_81_with_background_first():
    assert len(COCO_CLASSES) == 81 and COCO_CLASSES[0] == "background"
    assert COCO_CLASSES[1] == "person" and COCO_CLASSES[80] == "toothbrush"


@pytest.mark.parametrize("jpeg_folder", [False, True])
def test_toco_layout_rows_match_what_was_written(tmp_path, jpeg_folder):
    tree = write_coco_toco_tree(tmp_path / "coco", jpeg_folder=jpeg_folder)
    dd = load_coco(tree["root"], ["train", "val"], cache_dir=_cache(tmp_path))
    assert {k: v["id"] for k, v in dd.items()} == tree["ids"]
    assert class_names_of(dd) == list(COCO_CLASSES)
    for split in ("train", "val"):
        for row in dd[split]:
            np.testing.assert_array_equal(np.asarray(row["mask"]), tree["masks"][row["id"]])
            assert row["labels"] == tree["labels"][row["id"]]


def test_toco_cls_labels_are_used_when_present(tmp_path):
    tree = write_coco_toco_tree(tmp_path / "coco", num_train=2, num_val=1)
    table = {i: np.eye(80, dtype=np.float32)[4] for i in tree["ids"]["train"]}  # class 5 (airplane)
    np.save(os.path.join(tree["root"], "cls_labels_onehot.npy"), table)
    ds = load_coco(tree["root"], "train", cache_dir=_cache(tmp_path))
    assert ds["labels"] == [[0, 5], [0, 5]]
    ds = load_coco(tree["root"], "train", cls_labels=False, cache_dir=_cache(tmp_path))
    assert ds["labels"] == [tree["labels"][i] for i in tree["ids"]["train"]]


def test_instances_json_is_painted_with_contiguous_ids(tmp_path):
    tree = write_coco_instances_tree(tmp_path / "coco")
    ds = load_coco(tree["root"], "val", min_size=0, drop_background_only=False, cache_dir=_cache(tmp_path))
    assert class_names_of(ds) == tree["class_names"]  # sorted category ids 1, 3, 90 -> 1, 2, 3
    assert sorted(ds["id"]) == sorted(tree["expected"])
    for row in ds:
        mask = np.asarray(row["mask"])
        expected = tree["expected"][row["id"]]
        assert mask.shape == tree["sizes"][row["id"]]
        assert row["labels"] == expected["labels"]
        for (y, x), value in expected["points"].items():
            assert mask[y, x] == value, (row["id"], (y, x))
        assert set(np.unique(mask)) == set(expected["labels"])


def test_instances_default_filters_follow_vit_pcm(tmp_path):
    tree = write_coco_instances_tree(tmp_path / "coco")
    # min_size drops the 20x30 image; background-only (mask with one value) is dropped by default.
    ds = load_coco(tree["root"], "val", min_size=25, cache_dir=_cache(tmp_path))
    assert sorted(ds["id"]) == ["COCO_val2014_000000000001", "COCO_val2014_000000000002"]
    with pytest.raises(ValueError, match="No image .* at least 256 pixels"):
        load_coco(tree["root"], "val", cache_dir=_cache(tmp_path))


def test_instances_masks_are_written_once_and_resumed(tmp_path):
    tree = write_coco_instances_tree(tmp_path / "coco")
    mask_dir = tmp_path / "masks"
    load_coco(tree["root"], "val", min_size=0, mask_dir=str(mask_dir), cache_dir=_cache(tmp_path))
    pngs = sorted(p for p in os.listdir(mask_dir) if p.endswith(".png"))
    assert len(pngs) == 4
    times = {p: os.stat(mask_dir / p).st_mtime_ns for p in pngs}
    os.remove(mask_dir / pngs[0])  # as if interrupted before this one
    load_coco(tree["root"], "val", min_size=0, mask_dir=str(mask_dir), cache_dir=_cache(tmp_path))
    assert sorted(p for p in os.listdir(mask_dir) if p.endswith(".png")) == pngs
    for p in pngs[1:]:
        assert os.stat(mask_dir / p).st_mtime_ns == times[p]  # reused, not rewritten


def test_changed_annotations_rewrite_the_masks(tmp_path):
    tree = write_coco_instances_tree(tmp_path / "coco")
    kwargs = dict(min_size=0, drop_background_only=False, cache_dir=_cache(tmp_path))
    before = load_coco(tree["root"], "val", **kwargs)
    with open(tree["annotation_file"]) as handle:
        data = json.load(handle)
    for annotation in data["annotations"]:
        if annotation["image_id"] == 3:
            raise AssertionError("image 3 has no annotation in the fixture")
    data["annotations"].append(
        {
            "id": 99,
            "image_id": 3,
            "category_id": 90,
            "iscrowd": 0,
            "segmentation": [[5, 5, 30, 5, 30, 30, 5, 30]],
            "area": 625.0,
            "bbox": [5, 5, 25, 25],
        }
    )
    with open(tree["annotation_file"], "w") as handle:
        json.dump(data, handle)
    after = load_coco(tree["root"], "val", **kwargs)
    target = "COCO_val2014_000000000003"
    assert dict(zip(before["id"], before["labels"]))[target] == [0]
    assert dict(zip(after["id"], after["labels"]))[target] == [0, 3]
    mask = np.asarray(after[after["id"].index(target)]["mask"])
    assert mask[15, 15] == 3


def test_instances_missing_files_are_named(tmp_path):
    tree = write_coco_instances_tree(tmp_path / "coco")
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        load_coco(tree["root"], "train", layout="instances", cache_dir=_cache(tmp_path))
    os.remove(os.path.join(tree["root"], "val2014", "COCO_val2014_000000000002.jpg"))
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000002.jpg"):
        load_coco(tree["root"], "val", min_size=0, cache_dir=_cache(tmp_path))


def test_toco_missing_split_list_is_named(tmp_path):
    tree = write_coco_toco_tree(tmp_path / "coco", num_train=1, num_val=1)
    os.remove(os.path.join(tree["root"], "val.txt"))
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        load_coco(tree["root"], "val", cache_dir=_cache(tmp_path))
