"""Palette PNGs (values are class ids, written atomically), overlays and the per-class IoU plot."""

import os

import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.data._common import read_index_mask
from cpfcte_hf.models.cpfcte.visualization import (
    colorize_mask,
    mask_to_image,
    overlay_mask,
    plot_per_class_iou,
    read_mask,
    save_mask,
    save_overlay_panels,
    voc_palette,
)


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)  # aeroplane
    assert tuple(palette[2]) == (0, 128, 0)  # bicycle
    assert tuple(palette[15]) == (192, 128, 128)  # person
    assert tuple(palette[255]) == (255, 255, 255)  # ignore
    assert len({tuple(c) for c in palette[:21]}) == 21


def test_palette_png_round_trip_keeps_class_ids(tmp_path):
    mask = np.array([[0, 1, 2], [15, 20, 255]], np.uint8)
    path = save_mask(mask, tmp_path / "sub" / "a.png")
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[15 * 3 : 16 * 3] == [192, 128, 128]
    np.testing.assert_array_equal(read_mask(path), mask)
    assert os.listdir(tmp_path / "sub") == ["a.png"]  # no temporary file left behind
    assert mask_to_image(mask).mode == "P"
    np.testing.assert_array_equal(colorize_mask(mask)[1, 0], [192, 128, 128])


def test_save_is_atomic_when_writing_fails(tmp_path):
    path = tmp_path / "m.png"
    save_mask(np.zeros((2, 2), np.uint8), path)
    with pytest.raises(ValueError):
        save_mask(np.full((2, 2), 300), path)  # cannot be a palette PNG
    with pytest.raises(ValueError):
        save_mask(np.zeros((2, 2, 2), np.uint8), path)
    np.testing.assert_array_equal(read_mask(path), np.zeros((2, 2)))  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["m.png"]


def test_read_mask_refuses_rgb(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png"):
        read_mask(tmp_path / "rgb.png")
    Image.fromarray(np.array([[0, 3]], np.uint8)).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), [[0, 3]])


@pytest.mark.parametrize("mode", ["P", "L"])
def test_read_mask_applies_the_exif_orientation_as_the_loaders_do(tmp_path, mode):
    # An external prediction PNG whose pixels are stored turned, with an orientation tag: it is read as displayed,
    # the rule of the loaders (read_index_mask) and of the images.
    stored = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    image = mask_to_image(stored) if mode == "P" else Image.fromarray(stored, mode="L")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed after a quarter turn clockwise
    image.save(tmp_path / "pred.png", exif=exif)
    displayed = np.rot90(stored, k=-1)  # [[3, 0], [4, 1], [5, 2]]
    np.testing.assert_array_equal(read_mask(tmp_path / "pred.png"), displayed)
    np.testing.assert_array_equal(read_index_mask(str(tmp_path / "pred.png")), displayed)


def test_overlay_leaves_background_and_ignore_untouched():
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255], [15, 0, 0]], np.uint8)
    blended = overlay_mask(image, mask, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 2], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 1], [114, 50, 50])  # halfway to (128, 0, 0)
    with pytest.raises(ValueError, match="sizes differ"):
        overlay_mask(image, mask[:1])


def test_overlay_panels_and_iou_plot_are_pngs(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    gt = np.zeros((30, 40), np.uint8)
    gt[5:20, 10:30] = 1
    gt[0] = 255
    path = save_overlay_panels(
        tmp_path / "overlays" / "x.png", image, {"ground truth": gt, "BPM": gt, "CRF": None}, ["background", "cat"]
    )
    with Image.open(path) as panels:
        assert panels.format == "PNG"
        assert panels.width > 3 * panels.height  # four panels side by side
    plot = plot_per_class_iou(
        tmp_path / "iou.png", {"BPM": [0.5, None, 0.25], "CRF": [0.6, float("nan"), 0.3]}, ["bg", "a", "b"], "t"
    )
    with Image.open(plot) as figure:
        assert figure.format == "PNG" and figure.width > 100
    with pytest.raises(ValueError, match="3 classes"):
        plot_per_class_iou(tmp_path / "bad.png", {"BPM": [0.5]}, ["bg", "a", "b"])
    assert not (tmp_path / "bad.png").exists()


def test_mask_pngs_written_by_the_data_loaders_use_the_one_palette(tmp_path):
    """The procedural shapes' masks (and COCO's painted masks, through `save_mask`) carry `voc_palette()`: 255 is
    the same colour in every mask PNG the package writes."""
    import io

    from cpfcte_hf.data.shapes import ShapesConfig, encode_sample, render_shapes_sample

    _, png = encode_sample(render_shapes_sample(ShapesConfig(image_size=32), "train", 0))
    with Image.open(io.BytesIO(png)) as written, Image.open(save_mask(np.zeros((2, 2)), tmp_path / "m.png")) as ours:
        assert written.getpalette() == ours.getpalette() == voc_palette().reshape(-1).tolist()


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path):
    # mkstemp creates 0600 files: masks and reports must stay readable by the others a plain open() would allow.
    from cpfcte_hf.utils.io import atomic_write_text

    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
