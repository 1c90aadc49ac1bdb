"""Bad input: each case is converted, skipped with one warning, or rejected with a message naming the file.

The decisions are documented in `cpfcte_hf/data/voc.py` (and repeated in the other loaders' docstrings).
"""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cpfcte_hf.data import EvalTransform, WeakSegmentationCollator, load_coco, load_tagged_images, load_voc
from tests.data_trees import save_palette_png, write_split_file, write_tagged_tree, write_voc_tree


def _cache(tmp_path):
    return str(tmp_path / "cache")


def _voc(tmp_path, count=4):
    return write_voc_tree(tmp_path / "data", splits={"train": count})


def _load(tree, tmp_path, **kwargs):
    return load_voc(tree["root"], "train", cache_dir=_cache(tmp_path), **kwargs)


# ------------------------------------------------------------------------------------------------ missing files


def test_missing_root_is_named(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    for loader in (
        lambda: load_voc(missing, "train"),
        lambda: load_coco(missing, "train"),
        lambda: load_tagged_images(missing),
    ):
        with pytest.raises(FileNotFoundError, match="no_such_dir"):
            loader()


def test_root_without_voc_layout_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No VOC layout under .*empty"):
        load_voc(str(tmp_path / "empty"), "train")


def test_missing_split_file_is_named(tmp_path):
    tree = _voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ImageSets.Segmentation.val\.txt"):
        load_voc(tree["root"], "val", cache_dir=_cache(tmp_path))


def test_missing_image_is_named(tmp_path):
    tree = _voc(tmp_path)
    gone = tree["ids"]["train"][2]
    os.remove(tree["images"][gone])
    with pytest.raises(FileNotFoundError, match=f"JPEGImages.{gone}.jpg"):
        _load(tree, tmp_path)


def test_missing_listed_tagged_image_is_named(tmp_path):
    tree = write_tagged_tree(tmp_path / "tagged")
    os.remove(os.path.join(tree["root"], "dog_01.jpg"))
    with pytest.raises(FileNotFoundError, match="dog_01.jpg"):
        load_tagged_images(tree["root"], cache_dir=_cache(tmp_path))


# ------------------------------------------------------------------------------------------------ unsafe ids


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "a/../../b", "/etc/passwd"])
def test_unsafe_ids_are_rejected_with_file_and_line(tmp_path, bad_id):
    tree = _voc(tmp_path)
    split_file = os.path.join(tree["voc_dir"], "ImageSets", "Segmentation", "train.txt")
    write_split_file(split_file, [tree["ids"]["train"][0], bad_id])
    with pytest.raises(ValueError, match=r"train\.txt, line 2") as error:
        _load(tree, tmp_path)
    assert ("'..'" in str(error.value)) or ("absolute" in str(error.value))


def test_unsafe_tagged_file_name_is_rejected(tmp_path):
    tree = write_tagged_tree(tmp_path / "tagged", tag_format="json")
    with open(tree["tags"], "w") as handle:
        handle.write('{"../outside.jpg": ["cat"]}')
    with pytest.raises(ValueError, match=r"tags\.json.*'\.\.'"):
        load_tagged_images(tree["root"], cache_dir=_cache(tmp_path))


# ------------------------------------------------------------------------------------------------ skipped items


def _corrupt(tree):
    """Garbage in one image, a truncated JPEG in another; returns their ids."""
    ids = tree["ids"]["train"]
    with open(tree["images"][ids[0]], "wb") as handle:
        handle.write(b"this is not an image at all")
    with open(tree["images"][ids[1]], "rb") as handle:
        data = handle.read()
    with open(tree["images"][ids[1]], "wb") as handle:
        handle.write(data[: len(data) // 2])
    return ids[0], ids[1]


def test_corrupt_and_truncated_images_are_skipped_with_one_warning(tmp_path):
    tree = _voc(tmp_path, count=5)
    garbage, truncated = _corrupt(tree)
    with pytest.warns(UserWarning) as record:
        ds = _load(tree, tmp_path)
    messages = [str(w.message) for w in record if "Skipped" in str(w.message)]
    assert len(messages) == 1
    assert "Skipped 2 of 5" in messages[0] and "2 unreadable image" in messages[0]
    assert garbage in messages[0] and truncated in messages[0]
    assert ds["id"] == tree["ids"]["train"][2:]
    # The cached dataset reports the same, without rebuilding.
    with pytest.warns(UserWarning, match="Skipped 2 of 5"):
        again = _load(tree, tmp_path)
    assert again.cache_files[0]["filename"] == ds.cache_files[0]["filename"]


def test_a_dataloader_with_workers_never_meets_the_bad_files(tmp_path):
    tree = _voc(tmp_path, count=6)
    _corrupt(tree)
    with pytest.warns(UserWarning):
        ds = _load(tree, tmp_path)
    transformed = ds.with_transform(EvalTransform(21, size=(32, 32)))
    loader = DataLoader(transformed, batch_size=2, num_workers=2, collate_fn=WeakSegmentationCollator())
    batches = list(loader)
    assert sum(b["pixel_values"].shape[0] for b in batches) == 4


def test_mask_with_out_of_range_values_is_skipped(tmp_path):
    tree = _voc(tmp_path)
    bad = tree["ids"]["train"][1]
    mask = tree["masks"][bad].copy()
    mask[0, 0] = 30  # VOC has classes 0..20 (and 255)
    save_palette_png(os.path.join(tree["voc_dir"], "SegmentationClassAug", bad + ".png"), mask)
    with pytest.warns(UserWarning, match=rf"mask values outside 0..20 and 255: .*{bad}.png has \[30\]"):
        ds = _load(tree, tmp_path)
    assert bad not in ds["id"] and len(ds) == 3


def test_colour_coded_rgb_mask_is_skipped(tmp_path):
    tree = _voc(tmp_path)
    bad = tree["ids"]["train"][0]
    path = os.path.join(tree["voc_dir"], "SegmentationClassAug", bad + ".png")
    Image.open(path).convert("RGB").save(path)
    with pytest.warns(UserWarning, match="mask mode RGB is not an index mask"):
        ds = _load(tree, tmp_path)
    assert bad not in ds["id"]


def test_mask_of_another_size_is_skipped(tmp_path):
    tree = _voc(tmp_path)
    bad = tree["ids"]["train"][3]
    save_palette_png(os.path.join(tree["voc_dir"], "SegmentationClassAug", bad + ".png"), np.zeros((5, 7), np.uint8))
    with pytest.warns(UserWarning, match=rf"mask size differs from image: .*{bad}.png is 7x5"):
        ds = _load(tree, tmp_path)
    assert ds["id"] == tree["ids"]["train"][:3]


def test_nothing_left_is_an_error(tmp_path):
    tree = _voc(tmp_path, count=2)
    _corrupt(tree)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="No usable images"):
            _load(tree, tmp_path)


# ------------------------------------------------------------------------------------------------ kept items


def test_background_only_image_is_kept_unless_asked(tmp_path):
    tree = _voc(tmp_path)
    empty = tree["ids"]["train"][2]
    save_palette_png(
        os.path.join(tree["voc_dir"], "SegmentationClassAug", empty + ".png"), np.zeros_like(tree["masks"][empty])
    )
    ds = _load(tree, tmp_path)
    assert ds[2]["labels"] == [0]
    dropped = _load(tree, tmp_path, drop_background_only=True)
    assert empty not in dropped["id"] and len(dropped) == 3


def _expected_pixels(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((rgb.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)


def test_cmyk_rgba_grey_palette_and_16bit_images_are_converted(tmp_path):
    tree = _voc(tmp_path, count=5)
    ids = tree["ids"]["train"]
    height, width = tree["masks"][ids[0]].shape
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    images_dir = os.path.join(tree["voc_dir"], "JPEGImages")
    expected = {}

    def replace(item_id, image, expected_rgb):
        os.remove(tree["images"][item_id])
        image.save(os.path.join(images_dir, item_id + ".png"))  # PNG keeps the mode exactly
        expected[item_id] = expected_rgb

    for index, item_id in enumerate(ids):
        height, width = tree["masks"][item_id].shape
        block = np.broadcast_to(rgb[:1, :1], (height, width, 3)).copy()
        if index == 0:  # RGBA: alpha dropped
            rgba = np.concatenate([block, np.full((height, width, 1), 7, np.uint8)], axis=2)
            replace(item_id, Image.fromarray(rgba, "RGBA"), block)
        elif index == 1:  # grey: repeated
            replace(
                item_id,
                Image.fromarray(np.full((height, width), 90, np.uint8), "L"),
                np.full((height, width, 3), 90, np.uint8),
            )
        elif index == 2:  # 16-bit: scaled to 8
            replace(
                item_id,
                Image.fromarray(np.full((height, width), 65535, np.uint16)),
                np.full((height, width, 3), 255, np.uint8),
            )
        elif index == 3:  # palette: its own colours (the web palette quantises the block)
            palette_image = Image.fromarray(block).convert("P")
            replace(item_id, palette_image, np.asarray(palette_image.convert("RGB")))
        else:  # CMYK (JPEG): PIL's conversion
            cmyk = Image.fromarray(block).convert("CMYK")
            os.remove(tree["images"][item_id])
            path = os.path.join(images_dir, item_id + ".jpg")
            cmyk.save(path, quality=100)
            expected[item_id] = np.asarray(Image.open(path).convert("RGB"))
    ds = _load(tree, tmp_path)
    assert ds["id"] == ids
    modes = [Image.open(os.path.join(images_dir, f)).mode for f in sorted(os.listdir(images_dir))]
    assert {"RGBA", "L", "P", "CMYK"} <= set(modes) and any(m.startswith("I") for m in modes)
    # Eval at the original size: no resize, so pixel values must equal the expected RGB exactly.
    for item_id in ids:
        row = ds[ids.index(item_id)]
        height, width = tree["masks"][item_id].shape
        out = EvalTransform(21, size=(height, width))({k: [v] for k, v in row.items()})
        torch.testing.assert_close(out["pixel_values"][0], _expected_pixels(expected[item_id]), msg=item_id)


def test_unknown_tag_and_duplicate_are_rejected_with_the_row(tmp_path):
    tree = write_tagged_tree(tmp_path / "tagged")
    expected = (
        r"tags\.csv, line 2: unknown class tag\(s\) \['sofa'\]\. Valid tags are the class names \['background', 'cat'"
    )
    with pytest.raises(ValueError, match=expected):
        load_tagged_images(tree["root"], class_names=["cat", "dog"], cache_dir=_cache(tmp_path))
    with open(tree["tags"], "a") as handle:
        handle.write("dog_01.jpg,cat\n")
    with pytest.raises(ValueError, match=r"'dog_01.jpg' is listed twice"):
        load_tagged_images(tree["root"], cache_dir=_cache(tmp_path))
