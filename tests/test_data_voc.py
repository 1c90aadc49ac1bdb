"""VOC loader: what it returns vs what the fixture wrote, split aliases, label sources, the Arrow cache."""

import os
import time

import datasets
import numpy as np
import pytest

from cpfcte_hf.data import build_dataset, class_names_of, load_voc
from cpfcte_hf.models.cpfcte.configuration_cpfcte import VOC_CLASSES
from tests.data_trees import save_palette_png, write_split_file, write_voc_tree


def _cache(tmp_path):
    return str(tmp_path / "cache")


def test_voc_rows_match_what_was_written(tmp_path):
    tree = write_voc_tree(tmp_path / "data")
    ds = load_voc(tree["root"], "train_aug", cache_dir=_cache(tmp_path))
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["image", "mask", "labels", "id"]
    assert ds["id"] == tree["ids"]["train_aug"]
    assert class_names_of(ds) == list(VOC_CLASSES)
    assert isinstance(ds.features["labels"].feature, datasets.ClassLabel)
    for row in ds:
        np.testing.assert_array_equal(np.asarray(row["mask"]), tree["masks"][row["id"]])
        assert row["labels"] == tree["labels"][row["id"]]
        assert row["image"].size == row["mask"].size


@pytest.mark.parametrize("root_kind", ["parent", "devkit", "voc2012"])
def test_voc_root_may_point_at_any_level(tmp_path, root_kind):
    tree = write_voc_tree(tmp_path / "data", splits={"val": 2})
    root = {"parent": tree["root"], "devkit": os.path.join(tree["root"], "VOCdevkit"), "voc2012": tree["voc_dir"]}
    ds = load_voc(root[root_kind], "val", cache_dir=_cache(tmp_path))
    assert ds["id"] == tree["ids"]["val"]


def test_train_aug_is_found_under_both_names(tmp_path):
    tree = write_voc_tree(tmp_path / "a", splits={"train_aug": 3}, split_file_names={"train_aug": "trainaug"})
    assert load_voc(tree["root"], "train_aug", cache_dir=_cache(tmp_path))["id"] == tree["ids"]["train_aug"]
    tree = write_voc_tree(tmp_path / "b", splits={"train_aug": 2})
    assert load_voc(tree["root"], "trainaug", cache_dir=_cache(tmp_path))["id"] == tree["ids"]["train_aug"]


def test_several_splits_give_a_dataset_dict(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 2, "val": 3})
    dd = load_voc(tree["root"], ["train", "val"], cache_dir=_cache(tmp_path))
    assert isinstance(dd, datasets.DatasetDict)
    assert {k: len(v) for k, v in dd.items()} == {"train": 2, "val": 3}


def test_segmentation_class_is_the_fallback_mask_folder(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 2}, mask_folder="SegmentationClass")
    ds = load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))
    assert [r for r in ds["labels"]] == [tree["labels"][i] for i in tree["ids"]["train"]]


def test_class_names_file_sets_the_classes(tmp_path):
    names = ["background", "disc", "square", "ring"]
    tree = write_voc_tree(tmp_path / "data", splits={"train": 3}, class_names=names)
    ds = load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))
    assert class_names_of(ds) == names
    assert ds["labels"] == [tree["labels"][i] for i in tree["ids"]["train"]]


def test_cls_labels_npy_gives_labels_and_covers_missing_masks(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train_aug": 3}, cls_labels=True)
    missing = tree["ids"]["train_aug"][1]
    os.remove(os.path.join(tree["voc_dir"], "SegmentationClassAug", missing + ".png"))
    # Labels in the npy differ from the mask on purpose for one id: the npy wins.
    table = np.load(os.path.join(tree["voc_dir"], "cls_labels_onehot.npy"), allow_pickle=True).item()
    first = tree["ids"]["train_aug"][0]
    table[first] = np.eye(20, dtype=np.float32)[6]  # class 7 (car) only
    np.save(os.path.join(tree["voc_dir"], "cls_labels_onehot.npy"), table)
    ds = load_voc(tree["root"], "train_aug", cache_dir=_cache(tmp_path))
    rows = {r["id"]: r for r in ds}
    assert rows[first]["labels"] == [0, 7]
    assert rows[missing]["mask"] is None
    assert rows[missing]["labels"] == tree["labels"][missing]
    # Without the npy the missing mask is an error naming it.
    with pytest.raises(FileNotFoundError, match=missing + ".png"):
        load_voc(tree["root"], "train_aug", cls_labels=False, cache_dir=_cache(tmp_path))


def test_build_dataset_by_name(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"val": 2})
    ds = build_dataset(name="voc", root=tree["root"], split="val", cache_dir=_cache(tmp_path))
    assert ds["id"] == tree["ids"]["val"]
    with pytest.raises(ValueError, match="Unknown dataset"):
        build_dataset("imagenet", root=tree["root"])


def test_second_load_is_served_from_the_arrow_cache(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 4})
    first = load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))
    arrow = first.cache_files[0]["filename"]
    written = os.stat(arrow).st_mtime_ns
    start = time.perf_counter()
    second = load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))
    elapsed = time.perf_counter() - start
    assert second.cache_files[0]["filename"] == arrow
    assert os.stat(arrow).st_mtime_ns == written  # not regenerated
    assert second["labels"] == first["labels"]
    assert elapsed < 2.0


def test_changed_source_is_not_served_stale(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 3})
    cache = _cache(tmp_path)
    first = load_voc(tree["root"], "train", cache_dir=cache)
    voc = tree["voc_dir"]
    target = tree["ids"]["train"][0]

    # A modified mask (new class) changes the labels.
    mask = tree["masks"][target].copy()
    mask[-3:, -3:] = 19
    save_palette_png(os.path.join(voc, "SegmentationClassAug", target + ".png"), mask)
    changed = load_voc(tree["root"], "train", cache_dir=cache)
    assert changed.cache_files[0]["filename"] != first.cache_files[0]["filename"]
    assert 19 in changed["labels"][0] and 19 not in first["labels"][0]

    # An id added to the split (with its files) appears.
    extra = "2011_000999"
    for folder, ext in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png")):
        source = os.path.join(voc, folder, target + ext)
        with open(source, "rb") as src, open(os.path.join(voc, folder, extra + ext), "wb") as dst:
            dst.write(src.read())
    write_split_file(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), [*tree["ids"]["train"], extra])
    grown = load_voc(tree["root"], "train", cache_dir=cache)
    assert grown["id"] == [*tree["ids"]["train"], extra]

    # A removed image is an error naming it, not a stale row.
    os.remove(os.path.join(voc, "JPEGImages", extra + ".jpg"))
    with pytest.raises(FileNotFoundError, match=extra + ".jpg"):
        load_voc(tree["root"], "train", cache_dir=cache)


def test_deeplab_style_list_lines_are_read(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 2})
    ids = tree["ids"]["train"]
    lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in ids]
    write_split_file(os.path.join(tree["voc_dir"], "ImageSets", "Segmentation", "train.txt"), lines)
    assert load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))["id"] == ids


def test_parallel_validation_gives_the_same_rows(tmp_path):
    tree = write_voc_tree(tmp_path / "data", splits={"train": 6})
    with open(tree["images"][tree["ids"]["train"][4]], "wb") as handle:
        handle.write(b"broken")
    with pytest.warns(UserWarning, match="Skipped 1 of 6"):
        serial = load_voc(tree["root"], "train", cache_dir=_cache(tmp_path))
    with pytest.warns(UserWarning, match="Skipped 1 of 6"):
        parallel = load_voc(tree["root"], "train", num_proc=2, cache_dir=str(tmp_path / "cache2"))
    assert parallel["id"] == serial["id"] and parallel["labels"] == serial["labels"]
