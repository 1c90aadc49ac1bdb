"""The CRF input's geometry: ours (align_corners, the BPM's map) or ViT-PCM's (scikit-image's half-pixel resize)."""

import numpy as np
import pytest
import torch
from skimage.transform import resize as skimage_resize

from cpfcte_hf.cli.commands import label as label_command
from cpfcte_hf.models.cpfcte.crf import crf_mask
from cpfcte_hf.models.cpfcte.inference import predict_class_probabilities
from cpfcte_hf.models.cpfcte.visualization import read_mask
from cpfcte_hf.prediction.pseudo_labels import generate_pseudo_labels, pseudo_label_fingerprint
from cpfcte_hf.prediction.upsampling import half_pixel_resize, predict_with_crf_input

from .test_pseudo_labeling import checkpoint, make_dataset, model_and_processor, tiny_config  # noqa: F401


@pytest.mark.parametrize(
    ("grid", "size"), [((4, 4), (37, 50)), ((60, 60), (375, 500)), ((3, 5), (7, 5)), ((1, 2), (3, 9))]
)
def test_half_pixel_resize_is_scikit_images_bilinear_resize(grid, size):
    """ViT-PCM's `utils.resize` on a NumPy array: `skimage.transform.resize(order=1)` (mode reflect)."""
    maps = np.random.default_rng(0).random((3, *grid)).astype(np.float32)
    expected = skimage_resize(maps.transpose(1, 2, 0), output_shape=size, order=1).transpose(2, 0, 1)
    ours = half_pixel_resize(torch.from_numpy(maps), size).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # torch's align_corners=False differs on the outer half pixel (it repeats the edge, skimage mirrors it).
    if grid[0] > 1 and size[0] > grid[0]:
        torch_half = torch.nn.functional.interpolate(
            torch.from_numpy(maps)[None], size=size, mode="bilinear", align_corners=False
        )[0].numpy()
        assert np.abs(torch_half - expected).max() > 1e-4


@torch.no_grad()
def test_the_crf_reads_the_half_pixel_map_and_the_bpm_stays_align_corners(tmp_path, model_and_processor):  # noqa: F811
    model, processor = model_and_processor
    dataset = make_dataset(3)
    config = tiny_config(num_overlays=0, crf_upsampling="half_pixel")
    summary = generate_pseudo_labels(model, dataset, tmp_path, config, image_processor=processor)
    assert (summary.written, summary.failed) == (3, 0)
    differs = 0
    for row in dataset:
        image = np.asarray(row["image"])
        labels = torch.zeros(1, 4)
        labels[0, row["labels"]] = 1
        (bpm_map,), _ = predict_class_probabilities(model, [image], labels, size=32)
        mean_std = processor.image_mean, processor.image_std
        ((same_bpm, crf_input),), _ = predict_with_crf_input(model, [image], labels, 32, (1.0,), False, *mean_std)
        torch.testing.assert_close(same_bpm, bpm_map)
        np.testing.assert_array_equal(read_mask(tmp_path / "bpm" / f"{row['id']}.png"), bpm_map.numpy().argmax(0))
        crf = read_mask(tmp_path / "crf" / f"{row['id']}.png")
        np.testing.assert_array_equal(crf, crf_mask(image, crf_input.numpy()))
        differs += int((crf_input - bpm_map).abs().max() > 1e-4)
    assert differs == 3  # the two geometries give different CRF inputs


def test_the_option_is_checked_and_recorded_in_the_fingerprint(model_and_processor):  # noqa: F811
    model, _ = model_and_processor
    with pytest.raises(SystemExit):
        label_command.parse_arguments(["--model", "m", "--dataset", "shapes", "--crf_upsampling", "skimage"])
    stats = (0.5,) * 3, (0.5,) * 3
    default = pseudo_label_fingerprint(model, tiny_config(), 32, ["a"], True, *stats)
    vitpcm = pseudo_label_fingerprint(model, tiny_config(crf_upsampling="half_pixel"), 32, ["a"], True, *stats)
    assert "crf_upsampling" not in default and vitpcm["crf_upsampling"] == "half_pixel"
