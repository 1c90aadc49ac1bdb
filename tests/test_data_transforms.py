"""Train/eval transforms, the augmentation and the collator."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cpfcte_hf import CPFCTEImageProcessor
from cpfcte_hf.data import (
    AugmentationConfig,
    EvalTransform,
    TrainTransform,
    WeakSegmentationCollator,
    labels_to_multi_hot,
    load_shapes,
)
from cpfcte_hf.models.cpfcte.image_processing_cpfcte import resize_and_normalize, to_rgb_array


NO_AUGMENTATION = AugmentationConfig(colour_jitter_p=0, grayscale_p=0, hflip_p=0, vflip_p=0, transpose_p=0)


def _batch(count=4, size=(30, 40)):
    """Rows as `datasets` hands them to a transform: PIL images, PIL masks, label lists, ids."""
    rng = np.random.default_rng(0)
    images, masks, labels = [], [], []
    for i in range(count):
        images.append(Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)))
        mask = np.zeros(size, np.uint8)
        mask[2:12, 3:25] = 1 + i % 3
        mask[12, :] = 255
        masks.append(Image.fromarray(mask, mode="L").convert("P"))
        labels.append([0, 1 + i % 3])
    return {"image": images, "mask": masks, "labels": labels, "id": [f"x{i}" for i in range(count)]}


def test_eval_transform_is_the_processor_resize_and_nearest_masks():
    batch = _batch()
    out = EvalTransform(5, size=(16, 24))(batch)
    expected = resize_and_normalize([to_rgb_array(i) for i in batch["image"]], (16, 24))
    torch.testing.assert_close(out["pixel_values"], expected, rtol=0, atol=0)
    assert out["pixel_values"].dtype == torch.float32 and out["pixel_values"].shape == (4, 3, 16, 24)
    nearest = np.stack([np.asarray(m.resize((24, 16), Image.NEAREST)) for m in batch["mask"]])
    assert out["masks"].dtype == torch.int64
    np.testing.assert_array_equal(out["masks"].numpy(), nearest)
    assert 255 in out["masks"].unique().tolist()
    assert out["labels"].tolist()[1] == [1, 0, 1, 0, 0]
    assert out["id"] == ["x0", "x1", "x2", "x3"]


def test_sizes_and_normalisation_come_from_the_image_processor():
    processor = CPFCTEImageProcessor(size={"height": 8, "width": 8}, image_mean=[0, 0, 0], image_std=[1, 1, 1])
    out = TrainTransform(5, processor)(_batch())
    assert out["pixel_values"].shape == (4, 3, 8, 8)
    assert out["pixel_values"].min() >= 0 and out["pixel_values"].max() <= 1
    assert "masks" not in out  # train masks are opt-in
    assert EvalTransform(5, processor).size == (8, 8)
    assert EvalTransform(5).size == (384, 384)


def test_train_without_augmentation_equals_eval():
    batch = _batch()
    train = TrainTransform(5, size=(16, 16), augmentation=NO_AUGMENTATION, with_masks=True)(batch)
    evaluation = EvalTransform(5, size=(16, 16))(batch)
    for key in ("pixel_values", "labels", "masks"):
        torch.testing.assert_close(train[key], evaluation[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "field, operation",
    [
        ("hflip_p", lambda x: x.flip(-1)),
        ("vflip_p", lambda x: x.flip(-2)),
        ("transpose_p", lambda x: x.transpose(-1, -2)),
    ],
)
def test_each_geometric_step_moves_image_and_mask_together(field, operation):
    batch = _batch()
    config = AugmentationConfig(**{**NO_AUGMENTATION.__dict__, field: 1.0})
    out = TrainTransform(5, size=(16, 16), augmentation=config, with_masks=True)(batch)
    reference = EvalTransform(5, size=(16, 16))(batch)
    torch.testing.assert_close(out["pixel_values"], operation(reference["pixel_values"]), rtol=0, atol=0)
    torch.testing.assert_close(out["masks"], operation(reference["masks"]), rtol=0, atol=0)
    assert not torch.equal(out["masks"], reference["masks"])


def test_random_geometry_keeps_image_and_mask_aligned():
    # The image encodes its own mask (red = 10 * class): after random flips and transposes both must still agree.
    size = 20
    masks, images = [], []
    for i in range(16):
        mask = np.zeros((size, size), np.uint8)
        mask[1 : 8 + i % 5, 2:6] = 1
        mask[12:18, 3 + i % 4 : 19] = 2
        masks.append(Image.fromarray(mask, mode="L"))
        image = np.zeros((size, size, 3), np.uint8)
        image[..., 0] = mask * 10
        images.append(Image.fromarray(image))
    batch = {"image": images, "mask": masks, "labels": [[0, 1, 2]] * 16}
    config = AugmentationConfig(colour_jitter_p=0, grayscale_p=0)
    torch.manual_seed(1)
    out = TrainTransform(3, size=(size, size), augmentation=config, with_masks=True)(batch)
    red = ((out["pixel_values"][:, 0] * 0.5 + 0.5) * 255).round().long()
    torch.testing.assert_close(red, out["masks"] * 10, rtol=0, atol=0)
    original = torch.from_numpy(np.stack([np.asarray(m) for m in masks])).long()
    changed = [not torch.equal(out["masks"][i], original[i]) for i in range(16)]
    assert 8 <= sum(changed) < 16  # with p = 0.5 for three steps, most but rarely all images move


def test_grayscale_and_brightness():
    batch = _batch()
    grey = AugmentationConfig(**{**NO_AUGMENTATION.__dict__, "grayscale_p": 1.0})
    out = TrainTransform(5, size=(16, 16), augmentation=grey)(batch)["pixel_values"]
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], rtol=0, atol=0)

    flat = {"image": [Image.new("RGB", (8, 8), (128, 128, 128))] * 64, "labels": [[0]] * 64}
    bright = AugmentationConfig(
        brightness=0.2, contrast=(1, 1), saturation=(1, 1), hue=0.0, grayscale_p=0, hflip_p=0, vflip_p=0, transpose_p=0
    )
    torch.manual_seed(0)
    shifted = TrainTransform(2, size=(8, 8), augmentation=bright)(flat)["pixel_values"]
    delta = shifted - EvalTransform(2, size=(8, 8))(flat)["pixel_values"]
    per_image = delta.flatten(1)
    assert torch.allclose(per_image.min(1).values, per_image.max(1).values, atol=1e-6)  # one shift per image
    assert per_image.abs().max() <= 2 * 0.2 + 2 / 255  # 0.2 in [0, 1] is 0.4 after mean = std = 0.5
    assert per_image.abs().max() > 0.2  # and it is really drawn from the whole range


def test_default_augmentation_changes_colours_and_stays_in_range():
    batch = _batch(8)
    torch.manual_seed(0)
    out = TrainTransform(5, size=(16, 16), with_masks=True)(batch)
    reference = EvalTransform(5, size=(16, 16))(batch)
    assert out["pixel_values"].min() >= -1 and out["pixel_values"].max() <= 1
    assert not torch.allclose(out["pixel_values"], reference["pixel_values"])
    torch.testing.assert_close(out["labels"], reference["labels"])  # labels never change


def test_invalid_augmentation_settings_are_rejected():
    with pytest.raises(ValueError, match="hue"):
        AugmentationConfig(hue=0.7)
    with pytest.raises(ValueError, match="probability"):
        AugmentationConfig(hflip_p=1.5)
    with pytest.raises(ValueError, match="square"):
        TrainTransform(5, size=(16, 24))
    TrainTransform(5, size=(16, 24), augmentation=AugmentationConfig(transpose_p=0))


def test_collator_stacks_and_converts():
    rows = [
        {"pixel_values": torch.zeros(3, 4, 4), "labels": [0, 2], "id": "a"},
        {"pixel_values": torch.ones(3, 4, 4), "labels": [0, 1, 3], "id": "b"},
    ]
    batch = WeakSegmentationCollator(num_labels=4, return_ids=True)(rows)
    assert batch["labels"].tolist() == [[1, 0, 1, 0], [1, 1, 0, 1]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["ids"] == ["a", "b"]
    assert set(WeakSegmentationCollator(num_labels=4)(rows)) == {"pixel_values", "labels"}
    with pytest.raises(ValueError, match="num_labels"):
        WeakSegmentationCollator()(rows)
    with pytest.raises(KeyError, match="with_transform"):
        WeakSegmentationCollator()([{"image": None, "labels": [0]}])
    with pytest.raises(ValueError, match="out of range"):
        labels_to_multi_hot([[0, 4]], 4)


def test_dataloader_with_two_workers_over_shapes(tmp_path):
    ds = load_shapes(["train", "val"], num_train=16, num_val=8, image_size=48, cache_dir=str(tmp_path))
    train = ds["train"].with_transform(TrainTransform.for_dataset(ds["train"], size=32))
    evaluation = ds["val"].with_transform(EvalTransform.for_dataset(ds, size=32))
    collator = WeakSegmentationCollator()
    batches = list(DataLoader(train, batch_size=8, shuffle=True, num_workers=2, collate_fn=collator))
    assert len(batches) == 2
    for batch in batches:
        assert batch["pixel_values"].shape == (8, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
        assert batch["labels"].shape == (8, 6) and batch["labels"].dtype == torch.float32
        assert (batch["labels"][:, 0] == 1).all()
    batch = next(iter(DataLoader(evaluation, batch_size=8, num_workers=2, collate_fn=collator)))
    assert batch["masks"].shape == (8, 32, 32) and batch["masks"].dtype == torch.int64
    for i in range(8):  # labels agree with the (resized) masks: every present class is tagged
        present = set(batch["masks"][i].unique().tolist()) - {255}
        assert present <= set(torch.nonzero(batch["labels"][i]).flatten().tolist())


def test_each_rank_draws_its_own_augmentations_reproducibly(monkeypatch):
    # Every process of a multi-process run is seeded alike (set_seed(seed)); the rank gives each its own draws.
    monkeypatch.delenv("RANK", raising=False)
    batch = _batch(8)

    def augmented(rank=None):
        torch.manual_seed(3)
        out = TrainTransform(5, size=(16, 16), with_masks=True, rank=rank)(batch)
        return out["pixel_values"], out["masks"]

    single = augmented()
    by_rank = {rank: augmented(rank) for rank in (0, 1, 2)}
    torch.testing.assert_close(by_rank[0], single, rtol=0, atol=0)  # rank 0 = a single process, as before
    assert not torch.equal(by_rank[1][0], by_rank[0][0]) and not torch.equal(by_rank[2][0], by_rank[1][0])
    assert not torch.equal(by_rank[1][1], by_rank[0][1])  # the flips differ too, not only the colours
    torch.testing.assert_close(augmented(1), by_rank[1], rtol=0, atol=0)  # a rank repeats its own draws
    monkeypatch.setenv("RANK", "1")  # what torchrun / accelerate launch set: the default rank
    torch.testing.assert_close(augmented(), by_rank[1], rtol=0, atol=0)


def test_loader_workers_of_two_ranks_draw_apart(monkeypatch):
    batch = _batch(8)
    transform = TrainTransform(5, size=(16, 16))

    def collate(indices):
        return transform({key: [values[i] for i in indices] for key, values in batch.items()})["pixel_values"]

    def epoch(rank):
        monkeypatch.setenv("RANK", str(rank))  # inherited by the loader workers
        loader = DataLoader(
            range(8), batch_size=2, num_workers=2, collate_fn=collate, generator=torch.Generator().manual_seed(0)
        )
        return torch.cat(list(loader))

    rank0, rank1 = epoch(0), epoch(1)
    for row in range(0, 8, 2):  # every batch, from either worker, differs between the ranks
        assert not torch.equal(rank0[row : row + 2], rank1[row : row + 2]), row
    torch.testing.assert_close(epoch(1), rank1, rtol=0, atol=0)


def test_colour_jitter_is_kornias_four_steps_in_vit_pcm_order():
    # Same draws, replayed: brightness (additive), contrast, saturation, hue, each as kornia.enhance defines them.
    from kornia.enhance import adjust_brightness, adjust_contrast_with_mean_subtraction, adjust_hue, adjust_saturation

    from cpfcte_hf.data import SegmentationAugmentation

    images = torch.rand(6, 3, 12, 12)
    config = AugmentationConfig(grayscale_p=0, hflip_p=0, vflip_p=0, transpose_p=0)
    torch.manual_seed(5)
    augmented, _ = SegmentationAugmentation(config)(images)
    torch.manual_seed(5)
    torch.rand(6)  # the per-image "apply jitter" draw

    def uniform(low, high):
        return low + (high - low) * torch.rand(6)

    brightness, contrast, saturation, hue = (
        uniform(-0.2, 0.2),
        uniform(0.5, 2.0),
        uniform(0.5, 1.5),
        uniform(-0.1, 0.1),
    )
    expected = adjust_brightness(images, brightness).clamp(0, 1)
    expected = adjust_contrast_with_mean_subtraction(expected, contrast).clamp(0, 1)
    expected = adjust_saturation(expected, saturation).clamp(0, 1)
    expected = adjust_hue(expected, hue * 2 * torch.pi).clamp(0, 1)
    torch.testing.assert_close(augmented, expected, rtol=0, atol=1e-5)


def test_clip_false_keeps_vit_pcms_unclipped_floats():
    """ViT-PCM jitters floats and normalises them as they are: with `clip=False` a contrast of 2 on a bright image
    leaves [0, 1] (beyond +-1 after normalisation) and nothing is rounded to 8-bit levels; the same draws with the
    default clamp after every step and round."""
    from cpfcte_hf.data.transforms import BatchAugmentation

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (4, 3, 12, 12), dtype=np.uint8))
    settings = dict(brightness=0.2, contrast=(2.0, 2.0), saturation=(1.0, 1.0), hue=0.0, grayscale_p=0, hflip_p=0)
    settings.update(vflip_p=0, transpose_p=0)
    torch.manual_seed(3)
    clipped, _ = BatchAugmentation(AugmentationConfig(**settings))(images)
    torch.manual_seed(3)
    unclipped, _ = BatchAugmentation(AugmentationConfig(**settings, clip=False))(images)
    assert clipped.min() >= -1 and clipped.max() <= 1
    assert unclipped.min() < -1 and unclipped.max() > 1
    levels = clipped * 127.5 + 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)  # 8-bit levels
    inside = (unclipped > -1) & (unclipped < 1)
    fractional = unclipped * 127.5 + 127.5
    assert (fractional[inside] - fractional[inside].round()).abs().max() > 0.01  # not rounded


@pytest.mark.parametrize("clip", [True, False])
def test_neutral_colour_jitter_is_skipped_without_changing_a_pixel_or_the_flips(monkeypatch, clip):
    """The shapes presets jitter with neutral factors (brightness 0, contrast and saturation 1, hue 0): the HSV round
    trip is skipped, the batch is the one the full jitter gives (equal after the 8-bit rounding; within float rounding
    unclipped), and the draws are still made, so every image gets the same flips as with the full jitter."""
    from cpfcte_hf.data.augmentation import AugmentationConfig as Config
    from cpfcte_hf.data.transforms import BatchAugmentation

    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (16, 3, 12, 12), dtype=np.uint8))
    masks = torch.from_numpy(rng.integers(0, 6, (16, 12, 12), dtype=np.uint8))
    neutral = Config(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0, clip=clip)
    assert neutral.colour_jitter_is_identity and not Config().colour_jitter_is_identity

    def augment():
        torch.manual_seed(11)
        return BatchAugmentation(neutral)(images, masks)

    calls = []
    import kornia.color

    original = kornia.color.hsv_to_rgb
    monkeypatch.setattr(kornia.color, "hsv_to_rgb", lambda *a, **k: calls.append(1) or original(*a, **k))
    skipped, skipped_masks = augment()
    assert not calls  # the round trip did not run
    monkeypatch.setattr(Config, "colour_jitter_is_identity", property(lambda self: False))
    full, full_masks = augment()
    assert calls  # ... and ran here
    assert torch.equal(skipped_masks, full_masks)  # the same flips, image by image
    if clip:
        assert torch.equal(skipped, full)
    else:
        torch.testing.assert_close(skipped, full, rtol=0, atol=1e-5)
