"""Tagged folders (CSV / JSON / JSONL tags, no masks) and Hub-style parquet / save_to_disk data."""

import io
import os
import warnings

import datasets
import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.data import (
    EvalTransform,
    WeakSegmentationCollator,
    build_dataset,
    class_names_of,
    load_hub_dataset,
    load_tagged_images,
)
from tests.data_trees import write_tagged_tree


def _cache(tmp_path):
    return str(tmp_path / "cache")


@pytest.mark.parametrize("tag_format", ["csv", "wide_csv", "json", "json_list", "jsonl"])
def test_tagged_folder_in_every_format(tmp_path, tag_format):
    tree = write_tagged_tree(tmp_path / "tagged", tag_format=tag_format)
    ds = load_tagged_images(tree["root"], cache_dir=_cache(tmp_path))  # tag file found in the folder
    assert ds.column_names == ["image", "labels", "id"]  # no masks
    assert class_names_of(ds) == tree["class_names"]
    assert ds["id"] == tree["ids"]
    assert dict(zip(ds["id"], ds["labels"])) == tree["labels"]
    assert ds[2]["image"].format == "PNG"  # the file in the sub-folder


def test_tagged_class_names_fix_the_order_and_background_is_prepended(tmp_path):
    tree = write_tagged_tree(tmp_path / "tagged")
    ds = load_tagged_images(
        tree["root"], tree["tags"], class_names=["sofa", "dog", "cat", "bird"], cache_dir=_cache(tmp_path)
    )
    assert class_names_of(ds) == ["background", "sofa", "dog", "cat", "bird"]
    assert ds[0]["labels"] == [0, 1, 3]  # cat + sofa
    dropped = load_tagged_images(tree["root"], drop_background_only=True, cache_dir=_cache(tmp_path))
    assert "empty_01" not in dropped["id"] and len(dropped) == 3


def test_tagged_without_masks_goes_through_eval_transform_without_masks(tmp_path):
    tree = write_tagged_tree(tmp_path / "tagged")
    ds = build_dataset("tagged", root=tree["root"], cache_dir=_cache(tmp_path))
    rows = ds.with_transform(EvalTransform.for_dataset(ds, size=16))
    batch = WeakSegmentationCollator()([rows[i] for i in range(len(rows))])
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["labels"].tolist()[0] == [1, 1, 0, 1]


def _png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _hub_rows(count=4):
    images, masks = [], []
    for i in range(count):
        images.append({"bytes": _png_bytes(np.full((10 + i, 12, 3), 30 * i, np.uint8)), "path": None})
        mask = np.zeros((10 + i, 12), np.uint8)
        mask[2:5, 2:5] = 1 + i % 2
        masks.append({"bytes": _png_bytes(mask), "path": None})
    return images, masks


def test_parquet_with_string_tags(tmp_path):
    images, _ = _hub_rows()
    features = datasets.Features(
        {"img": datasets.Image(), "tags": datasets.List(datasets.Value("string")), "name": datasets.Value("string")}
    )
    table = {"img": images, "tags": [["b"], ["a", "b"], [], ["a"]], "name": ["w", "x", "y", "z"]}
    path = str(tmp_path / "data.parquet")
    datasets.Dataset.from_dict(table, features=features).to_parquet(path)
    ds = load_hub_dataset(path, "train", cache_dir=_cache(tmp_path))
    assert ds.column_names == ["image", "labels", "id"]
    assert class_names_of(ds) == ["background", "a", "b"]
    assert ds["labels"] == [[0, 2], [0, 1, 2], [0], [0, 1]]
    assert ds["id"] == ["w", "x", "y", "z"]
    assert np.asarray(ds[1]["image"]).shape == (11, 12, 3)


def test_parquet_string_tags_use_the_one_class_name_rule(tmp_path):
    # The rule of cpfcte_hf.models.cpfcte.class_names, as in the tagged folder: case-insensitive, trimmed, `background` ignored,
    # a model's id2label names the classes; an unknown tag names the row and the tag and lists the classes.
    images, _ = _hub_rows(3)
    features = datasets.Features({"image": datasets.Image(), "tags": datasets.Value("string")})
    path = str(tmp_path / "t.parquet")
    datasets.Dataset.from_dict(
        {"image": images, "tags": ["Disc ;square", " DISC", "background"]}, features=features
    ).to_parquet(path)
    ds = load_hub_dataset(path, cache_dir=_cache(tmp_path))
    assert class_names_of(ds) == ["background", "Disc", "square"] and ds["labels"] == [[0, 1, 2], [0, 1], [0]]
    id2label = {0: "bg", 1: "ring", 2: "disc", 3: "Square"}
    ds = load_hub_dataset(path, class_names=id2label, cache_dir=_cache(tmp_path))
    assert class_names_of(ds) == ["bg", "ring", "disc", "Square"] and ds["labels"] == [[0, 2, 3], [0, 2], [0]]

    datasets.Dataset.from_dict({"image": images, "tags": ["disc", "square", "hexagon"]}, features=features).to_parquet(
        path
    )
    message = r"t\.parquet split 'train', row 2: unknown class tag\(s\) \['hexagon'\]"
    with pytest.raises(ValueError, match=message) as error:
        load_hub_dataset(path, class_names=id2label, cache_dir=_cache(tmp_path))
    assert "['bg', 'ring', 'disc', 'Square']" in str(error.value)


def test_class_label_without_background_is_shifted(tmp_path):
    images, masks = _hub_rows()
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "annotation": datasets.Image(),
            "objects": datasets.List(datasets.ClassLabel(names=["cat", "dog"])),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": images, "annotation": masks, "objects": [[0], [1], [0, 1], []]}, features=features
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = load_hub_dataset(str(tmp_path / "saved"), cache_dir=_cache(tmp_path))
    assert loaded.column_names == ["image", "mask", "labels", "id"]
    assert class_names_of(loaded) == ["background", "cat", "dog"]
    assert loaded["labels"] == [[0, 1], [0, 2], [0, 1, 2], [0]]
    assert loaded["id"] == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(np.unique(np.asarray(loaded[1]["mask"])), [0, 2])
    renamed = load_hub_dataset(str(tmp_path / "saved"), class_names=[" Dog", "CAT"], cache_dir=_cache(tmp_path))
    assert class_names_of(renamed) == ["background", " Dog", "CAT"]  # ClassLabel names matched by the same rule
    assert renamed["labels"] == [[0, 2], [0, 1], [0, 1, 2], [0]]


def test_labels_from_masks_with_an_explicit_column_mapping(tmp_path):
    images, masks = _hub_rows()
    features = datasets.Features({"photo": datasets.Image(), "seg": datasets.Image()})
    datasets.Dataset.from_dict({"photo": images, "seg": masks}, features=features).to_parquet(
        str(tmp_path / "m.parquet")
    )
    ds = load_hub_dataset(
        str(tmp_path / "m.parquet"),
        columns={"image": "photo", "mask": "seg"},
        class_names=["background", "one", "two"],
        cache_dir=_cache(tmp_path),
    )
    assert ds["labels"] == [[0, 1], [0, 2], [0, 1], [0, 2]]


def test_multi_hot_and_integer_labels_need_class_names(tmp_path):
    images, _ = _hub_rows(2)
    features = datasets.Features({"image": datasets.Image(), "labels": datasets.List(datasets.Value("float32"))})
    path = str(tmp_path / "mh.parquet")
    datasets.Dataset.from_dict({"image": images, "labels": [[1, 0], [1, 1]]}, features=features).to_parquet(path)
    with pytest.raises(ValueError, match="class_names"):
        load_hub_dataset(path, cache_dir=_cache(tmp_path))
    ds = load_hub_dataset(path, class_names=["background", "p", "q"], cache_dir=_cache(tmp_path))
    assert ds["labels"] == [[0, 1], [0, 1, 2]]  # foreground-only vectors: shifted by one


def test_hub_corrupt_image_is_dropped_with_a_warning(tmp_path):
    images, _ = _hub_rows(3)
    images[1] = {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["background", "x"])})
    path = str(tmp_path / "c.parquet")
    datasets.Dataset.from_dict({"image": images, "label": [1, 1, 0]}, features=features).to_parquet(path)
    with pytest.warns(UserWarning, match="Skipped 1 of 3 .* unreadable image"):
        ds = load_hub_dataset(path, cache_dir=_cache(tmp_path))
    assert ds["labels"] == [[0, 1], [0]]
    assert ds["id"] == ["0", "2"]


def test_hub_missing_local_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        load_hub_dataset(str(tmp_path / "nothing.parquet"))


def test_hub_warning_free_on_clean_data(tmp_path):
    images, _ = _hub_rows(2)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["bg", "x"])})
    path = str(tmp_path / "ok.parquet")
    datasets.Dataset.from_dict({"image": images, "label": [1, 0]}, features=features).to_parquet(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ds = load_hub_dataset(path, cache_dir=_cache(tmp_path))
    assert class_names_of(ds) == ["background", "x"] and ds["labels"] == [[0, 1], [0]]
    assert os.path.isdir(_cache(tmp_path))
