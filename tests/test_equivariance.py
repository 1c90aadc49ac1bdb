"""ViT-PCM's equivariance loss L_ET: the second views, their patch-level bookkeeping, and the loss in the trainer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpfcte_hf import CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.data.shapes import load_shapes
from cpfcte_hf.data.transforms import (
    AugmentationConfig,
    EquivarianceCollator,
    EquivarianceTrainTransform,
    EquivarianceViewConfig,
    apply_flips,
    crop_and_resize,
    make_mosaics,
    revert_flips,
    split_mosaics,
)
from cpfcte_hf.models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor, merge_class_labels
from cpfcte_hf.stage1.equivariance import equivariance_loss, equivariance_target
from cpfcte_hf.stage1.trainer import CPFCTETrainer
from tests.test_trainer import _args
from tests.utils import tiny_config


NO_COLOUR = dict(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0, grayscale_p=0.0)


def test_flips_are_undone_in_reverse_order():
    x = torch.randn(8, 2, 5, 5)
    flips = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.bool)
    torch.testing.assert_close(revert_flips(apply_flips(x, flips), flips), x)
    # LR then UD then transpose, as ViT-PCM's apply_affine_transform_invertible.
    torch.testing.assert_close(apply_flips(x[-1:], flips[-1:]), x[-1:].flip(-1).flip(-2).transpose(-1, -2))


def test_mosaic_tiles_four_views_row_major_and_splits_back():
    views = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    mosaic = make_mosaics(views)
    assert mosaic.shape == (1, 2, 6, 6)
    torch.testing.assert_close(mosaic[0, :, :3, :3], views[0])
    torch.testing.assert_close(mosaic[0, :, :3, 3:], views[1])
    torch.testing.assert_close(mosaic[0, :, 3:, :3], views[2])
    torch.testing.assert_close(mosaic[0, :, 3:, 3:], views[3])
    torch.testing.assert_close(split_mosaics(mosaic), views)
    with pytest.raises(ValueError, match="4 views"):
        make_mosaics(views[:3])


class PatchColourModel(nn.Module):
    """Patch logits from the patch's mean colour only: position-free, so geometry alone decides where a patch goes."""

    def __init__(self, patch_size: int, num_labels: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.classify = nn.Conv2d(3, num_labels, 1)
        torch.nn.init.normal_(self.classify.weight, std=3.0)

    def forward(self, pixel_values):
        return self.classify(F.avg_pool2d(pixel_values, self.patch_size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_and_mosaic_prediction_line_up_patch_for_patch(seed):
    """Patch-constant images, a position-free model, crops of the scale size (no resampling): exact equality."""
    torch.manual_seed(seed)
    patch, size = 8, 64
    rng = np.random.default_rng(seed)
    images = [np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((patch, patch, 1))).astype(np.uint8) for _ in range(8)]
    transform = EquivarianceTrainTransform(
        4,
        CPFCTEImageProcessor(size={"height": size, "width": size}),
        augmentation=AugmentationConfig(**NO_COLOUR),
        views=EquivarianceViewConfig(crop_p=1.0, crop_size=32, scale_size=32, patch_size=patch),
    )
    batch = transform({"image": images, "labels": [[0, 1]] * 8})
    assert batch["et_pixel_values"].shape == (8, 3, 32, 32) and batch["et_box"].shape == (8, 4)
    assert (batch["et_box"][:, 2:] == 4).all() and batch["view_flips"].any() and batch["et_flips"].any()
    assert len({tuple(box) for box in batch["et_box"].tolist()}) > 1

    model = PatchColourModel(patch)
    with torch.no_grad():
        full = model(batch["pixel_values"]).softmax(1)  # (8, C, 8, 8)
        predicted = split_mosaics(model(make_mosaics(batch["et_pixel_values"])).softmax(1))  # (8, C, 4, 4)
        canonical = revert_flips(full, batch["view_flips"])
        target = apply_flips(crop_and_resize(canonical, batch["et_box"], (4, 4)), batch["et_flips"])
    torch.testing.assert_close(target, predicted, rtol=1e-5, atol=1e-6)
    # And a wrong bookkeeping would not: e.g. forgetting to undo the full view's flips.
    wrong = apply_flips(crop_and_resize(full, batch["et_box"], (4, 4)), batch["et_flips"])
    assert not torch.allclose(wrong, predicted, atol=1e-3)


def test_downscaled_second_view_covers_the_whole_grid():
    torch.manual_seed(0)
    transform = EquivarianceTrainTransform(
        4,
        CPFCTEImageProcessor(size={"height": 64, "width": 64}),
        views=EquivarianceViewConfig(crop_p=0.0, crop_size=24, scale_size=32, patch_size=8),
    )
    image = np.zeros((50, 70, 3), np.uint8)
    batch = transform({"image": [image] * 4, "labels": [[0]] * 4})
    assert batch["et_box"].tolist() == [[0, 0, 8, 8]] * 4
    probabilities = torch.rand(4, 3, 8, 8).softmax(1)
    resized = crop_and_resize(probabilities, batch["et_box"], (4, 4))
    torch.testing.assert_close(resized, F.interpolate(probabilities, size=(4, 4), mode="bilinear", align_corners=True))
    with pytest.raises(ValueError, match="tile"):
        EquivarianceTrainTransform(4, size=64, views=EquivarianceViewConfig(scale_size=16, crop_size=16, patch_size=8))


def test_equivariance_loss_is_keras_categorical_cross_entropy_against_the_merged_target():
    torch.manual_seed(0)
    full = torch.rand(4, 3, 6, 6).softmax(1)
    labels = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 0]], dtype=torch.float32)
    no_flips = torch.zeros(4, 3)
    boxes = torch.tensor([[0, 0, 6, 6], [2, 2, 3, 3], [0, 3, 3, 3], [3, 0, 3, 3]])
    target = equivariance_target(full, labels, no_flips, no_flips, boxes, (3, 3))
    expected = merge_class_labels(crop_and_resize(full, boxes, (3, 3)), labels)
    torch.testing.assert_close(target, expected)
    assert (target[0, 2] == 0).all() and torch.allclose(target.sum(1), torch.ones(4, 3, 3))
    predicted = torch.rand(4, 3, 3, 3).softmax(1)
    manual = -(target * predicted.clamp(1e-7, 1 - 1e-7).log()).sum(1).mean()
    torch.testing.assert_close(equivariance_loss(target, predicted), manual)


def _et_args(tmp_path, weight, **overrides):
    values = dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    values.update(overrides)
    return _args(tmp_path, equivariance_loss_weight=weight, **values)


def _batch(num_images=8, size=32, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3)).astype(np.uint8) for _ in range(num_images)]
    transform = EquivarianceTrainTransform(
        4,
        CPFCTEImageProcessor(size={"height": size, "width": size}),
        views=EquivarianceViewConfig(crop_p=0.5, crop_size=8, scale_size=16, patch_size=8),
    )
    rows = transform({"image": images, "labels": [[1], [2, 3]] * (num_images // 2)})
    examples = [{key: value[i] for key, value in rows.items()} for i in range(num_images)]
    return EquivarianceCollator(4)(examples)


def test_trainer_adds_weight_times_l_et_computed_as_the_reference(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(context_fusion_dropout=0.0, classifier_dropout=0.0)  # train mode == eval mode here
    model = CPFCTEForWeaklySupervisedSegmentation(config)
    batch = _batch()
    trainer = CPFCTETrainer(model=model, args=_et_args(tmp_path, 0.5), data_collator=None)
    calls = []
    model.vit.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    model.train()
    loss = trainer.compute_loss(model, batch)
    assert calls == [8, 8 + 2]  # the target pass (no gradient), then one call for the 8 images and 2 mosaics

    with torch.no_grad():
        plain = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        full = model(pixel_values=batch["pixel_values"]).logits.softmax(1)
        predicted = split_mosaics(model(pixel_values=make_mosaics(batch["et_pixel_values"])).logits.softmax(1))
    target = equivariance_target(
        full, batch["labels"], batch["view_flips"], batch["et_flips"], batch["et_box"], (2, 2)
    )
    torch.testing.assert_close(loss, plain + 0.5 * equivariance_loss(target, predicted), rtol=1e-5, atol=1e-6)
    assert loss.requires_grad

    off = CPFCTETrainer(model=model, args=_et_args(tmp_path, 0.0), data_collator=None)
    torch.testing.assert_close(off.compute_loss(model, batch), plain, rtol=1e-5, atol=1e-6)


def test_a_short_batch_uses_its_first_multiple_of_four(tmp_path):
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    trainer = CPFCTETrainer(model=model, args=_et_args(tmp_path, 1.0), data_collator=None)
    calls = []
    model.vit.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    model.train()
    six = {key: value[:6] for key, value in _batch().items()}
    assert torch.isfinite(trainer.compute_loss(model, six))
    assert calls == [4, 6 + 1]
    calls.clear()
    three = {key: value[:3] for key, value in _batch().items()}
    trainer.compute_loss(model, three)
    assert calls == [3]  # no mosaic: the plain loss


def test_training_with_l_et_on_the_shapes_set(tmp_path):
    """A real Trainer loop: shapes images through EquivarianceTrainTransform and its collator, loss finite."""
    torch.manual_seed(0)
    train = load_shapes("train", num_train=8, image_size=32, num_classes=3, cache_dir=str(tmp_path / "cache"))
    transform = EquivarianceTrainTransform.for_dataset(
        train,
        CPFCTEImageProcessor(size={"height": 32, "width": 32}),
        views=EquivarianceViewConfig(crop_size=8, scale_size=16, patch_size=8),
    )
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    args = _et_args(tmp_path, 1.0, max_steps=2)
    trainer = CPFCTETrainer(
        model=model, args=args, train_dataset=train.with_transform(transform), data_collator=EquivarianceCollator(4)
    )
    sizes = []
    model.vit.register_forward_hook(lambda module, inputs, output: sizes.append(inputs[0].shape[0]))
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert sizes == [4, 5, 4, 5]  # each step: the target pass, then 4 images + 1 mosaic
