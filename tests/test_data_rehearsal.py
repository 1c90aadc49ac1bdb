"""The VOC-scale rehearsal set: VOC's layout as the loader reads it, 255 borders, exact counts, determinism, resume."""

import os

import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.cli.main import main as cli_main
from cpfcte_hf.data.rehearsal import render_rehearsal_sample, sample_image_size, write_voc_rehearsal
from cpfcte_hf.data.voc import load_voc
from cpfcte_hf.models.cpfcte.configuration_cpfcte import VOC_CLASSES
from cpfcte_hf.utils.fingerprint import FingerprintMismatch


VOC = os.path.join("VOCdevkit", "VOC2012")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    summary = write_voc_rehearsal(str(root), train_images=7, val_images=3, seed=5, num_workers=0, progress=False)
    return root, summary


def test_the_voc_loader_reads_the_tree_with_exact_counts(tree):
    root, summary = tree
    data = load_voc(str(root), ["train_aug", "val", "train"], cache_dir=str(root / "cache"))
    assert {name: len(split) for name, split in data.items()} == {"train_aug": 7, "val": 3, "train": 1}
    assert summary["splits"] == {"train_aug": 7, "val": 3, "train": 1} and summary["written"] == 10
    assert data["train_aug"].features["labels"].feature.names == list(VOC_CLASSES)
    labels = np.load(root / VOC / "cls_labels_onehot.npy", allow_pickle=True).item()
    assert sorted(labels) == sorted([*data["train_aug"]["id"], *data["val"]["id"]])
    for row in data["val"]:
        mask = np.asarray(Image.open(root / VOC / "SegmentationClass" / f"{row['id']}.png"))
        assert row["labels"] == [0, *sorted(int(v) for v in np.unique(mask) if 0 < v < 255)]
        assert row["labels"] == [0, *(np.flatnonzero(labels[row["id"]]) + 1).tolist()]


def test_masks_are_palette_pngs_with_void_borders_around_objects(tree):
    root, _ = tree
    for name in sorted(os.listdir(root / VOC / "SegmentationClassAug")):
        with Image.open(root / VOC / "SegmentationClassAug" / name) as mask_file:
            assert mask_file.mode == "P"
            mask = np.asarray(mask_file)
        with Image.open(root / VOC / "JPEGImages" / name.replace(".png", ".jpg")) as image:
            assert image.format == "JPEG" and image.size == mask.shape[::-1]
        assert max(image.size) <= 500
        objects = (mask > 0) & (mask < 255)
        assert objects.any() and (mask == 255).any()
        # every object pixel next to the background is separated from it by the 255 band
        assert not (objects[:, 1:] & (mask[:, :-1] == 0)).any() and not (objects[1:, :] & (mask[:-1, :] == 0)).any()


def test_sizes_vary_like_photos_and_images_do_not_depend_on_the_counts(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [sample_image_size(rng) for _ in range(2000)]
    landscape = sum(w > h for w, h in sizes) / len(sizes)
    assert 0.6 < landscape < 0.8 and sum(s == (500, 375) for s in sizes) > 0.3 * len(sizes)
    assert len(set(sizes)) > 20 and all(max(s) <= 500 for s in sizes)
    sample = render_rehearsal_sample(5, "train_aug", 3)
    write_voc_rehearsal(str(tmp_path), train_images=4, val_images=1, seed=5, num_workers=0, progress=False)
    with Image.open(tmp_path / VOC / "SegmentationClassAug" / f"{sample['id']}.png") as mask:
        assert np.array_equal(np.asarray(mask), sample["mask"])


def test_an_interrupted_tree_resumes_and_other_settings_are_refused(tmp_path, tree):
    root, _ = tree
    write_voc_rehearsal(str(tmp_path), train_images=4, val_images=3, seed=5, num_workers=0, progress=False)
    summary = write_voc_rehearsal(str(tmp_path), train_images=7, val_images=3, seed=5, num_workers=0, progress=False)
    assert (summary["written"], summary["found_done"]) == (3, 7)  # the tree grew by the 3 new images only
    os.remove(tmp_path / VOC / "SegmentationClassAug" / "2010_000002.png")  # as if killed before this mask
    summary = write_voc_rehearsal(str(tmp_path), train_images=7, val_images=3, seed=5, num_workers=0, progress=False)
    assert (summary["written"], summary["found_done"]) == (1, 9)
    for folder in ("JPEGImages", "SegmentationClassAug"):
        for name in os.listdir(root / VOC / folder):
            assert (tmp_path / VOC / folder / name).read_bytes() == (root / VOC / folder / name).read_bytes()
    with pytest.raises(FingerprintMismatch, match="seed"):
        write_voc_rehearsal(str(tmp_path), train_images=7, val_images=3, seed=6, num_workers=0, progress=False)
    summary = write_voc_rehearsal(
        str(tmp_path), train_images=2, val_images=1, seed=6, num_workers=0, progress=False, overwrite=True
    )
    assert summary["written"] == 3 and len(os.listdir(tmp_path / VOC / "JPEGImages")) == 3


def test_command_line(tmp_path, capsys):
    assert cli_main(["make-voc-rehearsal", "--output_dir", str(tmp_path), "--train_images", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    argv = ["--output_dir", str(tmp_path), "--train_images", "2", "--val_images", "2", "--num_workers", "2"]
    assert cli_main(["make-voc-rehearsal", *argv]) == 0
    assert len(load_voc(str(tmp_path), "val", cache_dir=str(tmp_path / "cache"))) == 2
    assert cli_main(["make-voc-rehearsal", *argv, "--seed", "1"]) == 2
    assert "seed" in capsys.readouterr().err
