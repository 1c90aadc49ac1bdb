"""Stage 2 training and evaluation: augmentation, pseudo-label pairs, SGD + poly, multi-scale inference, a real run."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import TrainerCallback, default_data_collator, pipeline

from cpfcte_hf import resize_and_normalize
from cpfcte_hf.data import loader_report
from cpfcte_hf.data.shapes import load_shapes
from cpfcte_hf.deeplab import IMAGENET_MEAN, IMAGENET_STD, DeepLabV2ForSemanticSegmentation
from cpfcte_hf.models.cpfcte.inference import corner_aligned_sizes
from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric
from cpfcte_hf.models.cpfcte.visualization import save_mask
from cpfcte_hf.prediction.segment import multi_scale_probabilities
from cpfcte_hf.stage2.dataset import (
    PseudoLabelDataset,
    PseudoLabelTransform,
    augmented_pairs,
    pseudo_label_dataset,
    random_scale_crop_flip,
    read_label,
    resolve_pseudo_label_dir,
)
from cpfcte_hf.stage2.train import (
    DeepLabDataArguments,
    DeepLabModelArguments,
    DeepLabTestArguments,
    DenseCRFArguments,
    channels_last_collator,
    run_deeplab,
)
from cpfcte_hf.stage2.trainer import DeepLabV2Trainer, DeepLabV2TrainingArguments
from tests.deeplab_helpers import tiny_deeplab_config


NUM_CLASSES = 3  # background, disc, square


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny procedural split (64x64, 2 foreground classes) and a pseudo-label directory made from its masks."""
    root = tmp_path_factory.mktemp("deeplab_shapes")
    train = load_shapes(
        "train", num_train=8, image_size=64, num_classes=NUM_CLASSES - 1, cache_dir=str(root / "cache")
    )
    val = load_shapes("val", num_val=3, image_size=64, num_classes=NUM_CLASSES - 1, cache_dir=str(root / "cache"))
    pseudo = root / "pseudo"
    for row in train:
        mask = np.asarray(row["mask"]).copy()
        mask[:4] = 255  # some ignored pixels, as CRF pseudo-labels may have
        save_mask(mask, pseudo / "crf" / f"{row['id']}.png")
        save_mask(np.zeros_like(mask), pseudo / "bpm" / f"{row['id']}.png")
    return train, val, pseudo


def _training_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=4,
        crop_size=49,
        learning_rate=0.01,
        logging_steps=1,
        save_steps=2,
        save_total_limit=None,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return DeepLabV2TrainingArguments(**values)


def _blocky_pair(seed=0, size=(40, 56)):
    """An image whose colour encodes the class of its mask, in blocks of 8 pixels, so alignment can be checked."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, (size[0] // 8, size[1] // 8))
    mask = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    image = np.stack([mask * 100, 255 - mask * 100, np.full_like(mask, 50)], axis=-1).astype(np.uint8)
    return image, mask


# ------------------------------------------------------------------------------------------------ augmentation


def test_augmentation_without_randomness_is_resize_and_normalize():
    image, mask = _blocky_pair()
    pixel_values, labels = random_scale_crop_flip(image, mask, crop_size=40, scale_range=(1.0, 1.0), flip_prob=0.0)
    expected = resize_and_normalize(image, (40, 56), IMAGENET_MEAN, IMAGENET_STD)[0]
    # The crop is the only randomness left: find it and compare exactly.
    left = next(x for x in range(17) if torch.equal(labels, torch.from_numpy(mask[:, x : x + 40]).long()))
    assert torch.equal(pixel_values, expected[:, :, left : left + 40])
    flipped_values, flipped_labels = random_scale_crop_flip(
        image, mask, crop_size=40, scale_range=(1.0, 1.0), flip_prob=1.0, generator=torch.Generator().manual_seed(3)
    )
    assert flipped_labels.shape == (40, 40) and flipped_values.shape == (3, 40, 40)
    left = next(
        x
        for x in range(17)
        if torch.equal(flipped_labels, torch.from_numpy(mask[:, x : x + 40][:, ::-1].copy()).long())
    )
    assert torch.equal(flipped_values, expected[:, :, left : left + 40].flip(-1))


def test_augmentation_pads_with_mean_and_ignore_and_keeps_image_and_labels_aligned():
    image, mask = _blocky_pair()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    saw_padding = False
    for _ in range(20):
        pixel_values, labels = random_scale_crop_flip(image, mask, crop_size=65, generator=generator)
        assert pixel_values.shape == (3, 65, 65) and labels.shape == (65, 65) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) <= {0, 1, 2, 255}
        padded = labels == 255
        if padded.any():
            saw_padding = True
            assert torch.all(pixel_values[:, padded] == 0)  # zero = the mean colour after normalisation
        # De-normalise: the red channel says which class the pixel shows. Away from block edges (bilinear vs nearest)
        # image and labels must agree.
        red = ((pixel_values * std + mean) * 255)[0]
        shown = torch.round(red / 100).clamp(0, 2).long()
        labelled = ~padded
        agreement = (shown[labelled] == labels[labelled]).float().mean().item()
        assert agreement > 0.9, agreement
    assert saw_padding  # 40x56 at scale <= 1.5 never covers 65x65


def test_pseudo_label_directory_resolution(shapes, tmp_path):
    _, _, pseudo = shapes
    assert resolve_pseudo_label_dir(pseudo) == pseudo / "crf"
    assert resolve_pseudo_label_dir(pseudo, "bpm") == pseudo / "bpm"
    assert resolve_pseudo_label_dir(pseudo / "crf") == pseudo / "crf"
    with pytest.raises(NotADirectoryError, match="does-not-exist"):
        resolve_pseudo_label_dir(tmp_path / "does-not-exist")
    (tmp_path / "only_bpm" / "bpm").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="without crf/"):
        resolve_pseudo_label_dir(tmp_path / "only_bpm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No <id>.png"):
        resolve_pseudo_label_dir(tmp_path / "empty")
    with pytest.raises(ValueError, match="pseudo_label_set"):
        resolve_pseudo_label_dir(pseudo, "cam")


def test_pseudo_label_dataset_pairs_images_with_their_masks(shapes, tmp_path, caplog):
    train, _, pseudo = shapes
    dataset = PseudoLabelDataset(train, pseudo / "crf", NUM_CLASSES, crop_size=33)
    assert len(dataset) == len(train)
    image, mask, image_id = dataset.read_pair(2)
    assert image_id == train[2]["id"] and image.shape == (64, 64, 3)
    expected = np.asarray(train[2]["mask"]).copy()
    expected[:4] = 255
    assert np.array_equal(mask, expected)
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 33, 33) and item["labels"].shape == (33, 33)

    # Images without a pseudo-label are left out with a warning; none at all is an error.
    partial = tmp_path / "partial"
    partial.mkdir()
    for image_id in train["id"][:5]:
        shutil.copy(pseudo / "crf" / f"{image_id}.png", partial / f"{image_id}.png")
    with caplog.at_level(logging.WARNING):
        assert len(PseudoLabelDataset(train, partial, NUM_CLASSES)) == 5
    assert "3 of 8 images have no pseudo-label" in caplog.text
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="None of the 8 images"):
        PseudoLabelDataset(train, tmp_path / "none", NUM_CLASSES)


def test_bad_pseudo_labels_raise_errors_naming_the_file(shapes, tmp_path):
    train, _, _ = shapes
    first = train[0]["id"]
    save_mask(np.zeros((10, 10), np.uint8), tmp_path / "small" / f"{first}.png")
    with pytest.raises(ValueError, match=f"small/{first}.png: mask is"):
        PseudoLabelDataset(train, tmp_path / "small", NUM_CLASSES)[0]
    save_mask(np.full((64, 64), 7, np.uint8), tmp_path / "values" / f"{first}.png")
    with pytest.raises(ValueError, match=rf"values/{first}.png: values \[7\]"):
        PseudoLabelDataset(train, tmp_path / "values", NUM_CLASSES)[0]


def test_pseudo_label_pairs_are_a_cached_datasets_dataset_rebuilt_when_a_mask_changes(shapes, tmp_path):
    """Stage 2's pairs are built as stage 1's datasets are: records -> an Arrow cache keyed by the files' size and
    modification time, so that a second build reads the cache and a rewritten pseudo-label builds a new one."""
    import datasets

    train, _, pseudo = shapes
    masks = tmp_path / "masks"
    shutil.copytree(pseudo / "crf", masks)
    (masks / f"{train[7]['id']}.png").unlink()
    pairs = pseudo_label_dataset(train, masks, NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    assert isinstance(pairs, datasets.Dataset) and pairs.column_names == ["image", "label", "id"]
    assert pairs["id"] == train["id"][:7]
    assert [item["id"] for item in loader_report(pairs)["skipped"]] == [train[7]["id"]]
    row = pairs[2]
    assert np.array_equal(np.asarray(row["image"]), np.asarray(train[2]["image"]))
    expected = np.asarray(train[2]["mask"]).copy()
    expected[:4] = 255
    assert np.array_equal(read_label(row["label"]), expected)
    again = pseudo_label_dataset(train, masks, NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    assert [f["filename"] for f in again.cache_files] == [f["filename"] for f in pairs.cache_files]

    mask = np.asarray(train[0]["mask"]).copy()
    mask[10:20, 10:20] = 0  # another pseudo-label of the same size: the cache goes stale
    save_mask(mask, masks / f"{train[0]['id']}.png")
    changed = pseudo_label_dataset(train, masks, NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    assert [f["filename"] for f in changed.cache_files] != [f["filename"] for f in pairs.cache_files]
    assert np.array_equal(read_label(changed[0]["label"]), mask)
    save_mask(np.full((64, 64), 9, np.uint8), masks / f"{train[1]['id']}.png")
    with pytest.raises(ValueError, match=rf"{train[1]['id']}.png: values \[9\]"):
        pseudo_label_dataset(train, masks, NUM_CLASSES, cache_dir=str(tmp_path / "cache"))


def test_the_transform_draws_the_crops_of_one_call_per_item_and_one_seed_gives_the_same_batches(shapes, tmp_path):
    """`with_transform(PseudoLabelTransform)` gives, for a seed, the crops `random_scale_crop_flip` gives item by item
    (0.1.0's `PseudoLabelDataset.__getitem__`); loaders with workers give identical batches for one seed."""
    train, _, pseudo = shapes
    pairs = pseudo_label_dataset(train, pseudo / "crf", NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    transform = PseudoLabelTransform(crop_size=41, scale_range=(0.7, 1.3), vflip_prob=0.5, transpose_prob=0.5)
    items = pairs.with_transform(transform)
    torch.manual_seed(5)
    batch = items.__getitems__([3, 1, 6])  # what a DataLoader fetches for one batch
    torch.manual_seed(5)
    for item, index in zip(batch, [3, 1, 6]):
        image, mask = np.asarray(train[index]["image"].convert("RGB")), read_label(pairs[index]["label"])
        expected = random_scale_crop_flip(image, mask, 41, (0.7, 1.3), vflip_prob=0.5, transpose_prob=0.5)
        assert torch.equal(item["pixel_values"], expected[0]) and torch.equal(item["labels"], expected[1])

    def batches():
        torch.manual_seed(11)
        loader = torch.utils.data.DataLoader(
            items, batch_size=3, shuffle=True, num_workers=2, collate_fn=default_data_collator
        )
        return list(loader)

    first, second = batches(), batches()
    assert len(first) == 3 and first[0]["pixel_values"].shape == (3, 3, 41, 41)
    for a, b in zip(first, second):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])


def test_the_training_pairs_decode_each_image_once_into_the_same_pixels_and_keep_what_the_budget_allows(
    shapes, tmp_path
):
    """`augmented_pairs` gives the images stored; the transform decodes them with `datasets`' decoder and keeps the
    decoded pairs (read-only, keyed by mask file) up to its budget: for one seed the same crops as rows decoded by
    `datasets`, in the first epoch and in the next (from what it kept), with a full, a partial and no cache."""
    train, _, pseudo = shapes
    pairs = pseudo_label_dataset(train, pseudo / "crf", NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    options = dict(crop_size=41, scale_range=(0.7, 1.3), vflip_prob=0.5, transpose_prob=0.5)
    order = [3, 1, 6, 0, 7, 2, 5, 4]

    def epochs(items, count=2):
        torch.manual_seed(5)
        return [items.__getitems__(order) for _ in range(count)]

    expected = epochs(pairs.with_transform(PseudoLabelTransform(**options, decoded_cache_bytes=0)))
    one_pair = 64 * 64 * 4  # a 64x64 RGB image and its mask, uint8
    for budget, kept in ((10 * one_pair, 8), (3 * one_pair, 3), (0, 0)):
        transform = PseudoLabelTransform(**options, decoded_cache_bytes=budget)
        items = augmented_pairs(pairs, transform)
        assert items.features["image"].decode is False and pairs.features["image"].decode is True
        got = epochs(items)
        assert len(transform._decoded) == kept and transform._decoded_bytes == kept * one_pair
        for epoch, reference in zip(got, expected):
            for item, wanted in zip(epoch, reference):
                assert torch.equal(item["pixel_values"], wanted["pixel_values"])
                assert torch.equal(item["labels"], wanted["labels"])
        for (path, (image, mask)), index in zip(transform._decoded.items(), order):
            assert path == pairs[index]["label"]["path"] and not image.flags.writeable and not mask.flags.writeable
            assert np.array_equal(image, np.asarray(train[index]["image"].convert("RGB")))
            assert np.array_equal(mask, read_label(path))


def test_the_training_batches_are_channels_last_with_the_same_values_and_the_model_follows(shapes, tmp_path):
    """Stage 2's collator gives `default_data_collator`'s batch with the images in channels-last order; a DeepLab-v2
    fed it keeps that order through its layers and computes the same logits up to rounding."""
    train, _, pseudo = shapes
    pairs = pseudo_label_dataset(train, pseudo / "crf", NUM_CLASSES, cache_dir=str(tmp_path / "cache"))
    items = augmented_pairs(pairs, PseudoLabelTransform(crop_size=41, scale_range=(0.7, 1.3)))
    features = [items[i] for i in range(4)]
    plain, batch = default_data_collator(features), channels_last_collator(features)
    assert batch.keys() == plain.keys() and torch.equal(batch["labels"], plain["labels"])
    assert torch.equal(batch["pixel_values"], plain["pixel_values"])
    assert not plain["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    assert batch["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config(NUM_CLASSES)).eval()
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
        reference = model(pixel_values=plain["pixel_values"]).logits
    assert logits.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ optimiser, schedule


def test_poly_decay_is_transformers_polynomial_schedule_per_group(shapes, tmp_path):
    """The LR of each group (deeplab_v2: backbone 1x, ASPP weights 10x, ASPP biases 20x) is base * mult *
    (1 - step / total) ** 0.9 at every step, from `lr_scheduler_type="polynomial"`, down to 0 at the end."""
    from transformers.trainer_utils import SchedulerType

    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    args = _training_args(tmp_path, max_steps=8, learning_rate=1e-3, save_strategy="no", lr_groups="deeplab_v2")
    assert args.lr_scheduler_type == SchedulerType.POLYNOMIAL
    assert args.lr_scheduler_kwargs == {"power": 0.9, "lr_end": 0.0}
    trainer = DeepLabV2Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["backbone", "aspp_weight", "aspp_bias"]
    for step in range(9):
        factor = (1 - step / 8) ** 0.9
        assert [g["lr"] for g in groups] == pytest.approx([1e-3 * factor, 1e-2 * factor, 2e-2 * factor], abs=1e-12)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    for bad, match in (({"lr_end": 1e-7}, "lr_end"), ({"power": 1.0}, "poly_power")):
        with pytest.raises(ValueError, match=match):
            _training_args(tmp_path, lr_scheduler_kwargs=bad)


def test_another_transformers_optimizer_gets_the_same_groups_and_schedule(tmp_path):
    """`optim="adamw_torch"` (the demo's random-init stage 2): transformers' AdamW with its betas and epsilon, on the
    recipe's parameter groups and their multipliers, under the same poly decay; the default stays SGD."""
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    assert _training_args(tmp_path).optim == "sgd"
    args = _training_args(
        tmp_path, max_steps=10, learning_rate=1e-3, save_strategy="no", optim="adamw_torch", adam_beta2=0.99,
        classifier_lr_multiplier=1.0,
    )  # fmt: skip
    trainer = DeepLabV2Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer = trainer.optimizer
    assert type(optimizer) is torch.optim.AdamW
    backbone, classifier = optimizer.param_groups
    assert backbone["betas"] == (0.9, 0.99) and backbone["eps"] == 1e-8 and backbone["weight_decay"] == 5e-4
    assert backbone["lr"] == pytest.approx(1e-3) == classifier["lr"]
    assert {id(p) for p in classifier["params"]} == {id(p) for p in model.aspp.parameters()}
    for _ in range(5):
        optimizer.step()
        trainer.lr_scheduler.step()
    assert backbone["lr"] == pytest.approx(1e-3 * 0.5**0.9)


def test_trainer_uses_sgd_with_10x_classifier_and_poly_decay(shapes, tmp_path):
    train, _, pseudo = shapes
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    args = _training_args(tmp_path, max_steps=10, learning_rate=1e-3, save_strategy="no")
    trainer = DeepLabV2Trainer(
        model=model,
        args=args,
        train_dataset=PseudoLabelDataset(train, pseudo / "crf", NUM_CLASSES, crop_size=33),
        data_collator=default_data_collator,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, classifier = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(1e-3) and classifier["lr"] == pytest.approx(1e-2)
    assert backbone["momentum"] == 0.9 and backbone["weight_decay"] == 5e-4 == classifier["weight_decay"]
    assert {id(p) for p in classifier["params"]} == {id(p) for p in model.aspp.parameters()}
    batch_norm = {id(p) for n, p in model.named_parameters() if "normalization" in n}
    assert batch_norm and not batch_norm & {id(p) for p in backbone["params"]}  # frozen BN is not optimised
    for _ in range(4):
        optimizer.step()
        trainer.lr_scheduler.step()
    factor = (1 - 4 / 10) ** 0.9
    assert backbone["lr"] == pytest.approx(1e-3 * factor) and classifier["lr"] == pytest.approx(1e-2 * factor)


def test_trainer_rejects_plain_training_arguments(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="DeepLabV2TrainingArguments"):
        DeepLabV2Trainer(
            model=DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()), args=TrainingArguments(str(tmp_path))
        )


# ------------------------------------------------------------------------------------------ inference, evaluation


def test_multi_scale_probabilities_are_the_max_over_upsampled_scales():
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    image, _ = _blocky_pair(size=(40, 56))
    probabilities = multi_scale_probabilities(model, image, (1.0, 0.5))
    assert probabilities.shape == (NUM_CLASSES, 40, 56)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(40, 56))
    views = []
    with torch.no_grad():  # at 8k+1 sizes (41x57, 17x25): the corner-aligned stride-8 logits fall on the image
        for size in corner_aligned_sizes([(40, 56), (20, 28)], model.config.output_stride):
            logits = model(resize_and_normalize(image, size, IMAGENET_MEAN, IMAGENET_STD)).logits
            views.append(F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=True))
    torch.testing.assert_close(probabilities, torch.maximum(*views).softmax(1)[0])
    single = multi_scale_probabilities(model, image, (1.0,))
    torch.testing.assert_close(single, views[0].softmax(1)[0])


def test_trainer_evaluate_is_the_split_miou(shapes, tmp_path):
    _, val, _ = shapes
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    trainer = DeepLabV2Trainer(model=model, args=_training_args(tmp_path, eval_scales=[1.0, 0.5]), eval_dataset=val)
    metrics = trainer.evaluate()
    metric = SegmentationMetric(NUM_CLASSES)
    for row in val:
        image = np.asarray(row["image"].convert("RGB"))
        metric.update(multi_scale_probabilities(model, image, (1.0, 0.5)).argmax(0).numpy(), np.asarray(row["mask"]))
    assert metrics["eval_mean_iou"] == pytest.approx(metric.compute().mean_iou)
    assert metrics["eval_num_images"] == 3 and "eval_iou_background" in metrics


# ------------------------------------------------------------------------------------------------ a real run


class LossRecorder(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def _run_arguments(pseudo, **model_overrides):
    data = DeepLabDataArguments(pseudo_labels=str(pseudo), eval_split="val")
    model = DeepLabModelArguments(
        backbone="none",
        resnet_depths=[1, 1, 1, 1],
        resnet_hidden_sizes=[8, 16, 16, 32],
        resnet_embedding_size=8,
        atrous_rates=[1, 2, 3, 4],
        image_size=65,
        **model_overrides,
    )
    test = DeepLabTestArguments(test_scales=[1.0, 0.75, 0.5], crf_workers=0, num_overlays=1)
    return data, model, test, DenseCRFArguments()


def test_tiny_deeplab_trains_on_pseudo_labels_saves_and_segments(shapes, tmp_path, monkeypatch):
    train, val, pseudo = shapes
    recorder = LossRecorder()
    original_init = DeepLabV2Trainer.__init__

    def init_with_recorder(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(recorder)

    monkeypatch.setattr(DeepLabV2Trainer, "__init__", init_with_recorder)
    args = _training_args(tmp_path, max_steps=30, save_steps=15, crop_size=65, learning_rate=0.02)
    torch.manual_seed(0)
    result = run_deeplab(*_run_arguments(pseudo), args, train_dataset=train, eval_dataset=val)

    losses = recorder.losses
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses

    output = tmp_path / "run"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "run_args.json"} <= {
        p.name for p in output.iterdir()
    }
    assert (output / "checkpoint-15").is_dir() and (output / "checkpoint-30").is_dir()

    # The final evaluation: multi-scale and multi-scale + CRF masks for every val image, and the shared report.
    prediction_dir = output / "predictions" / "val"
    for name in ("ms", "ms_crf"):
        assert sorted(p.stem for p in (prediction_dir / name).glob("*.png")) == sorted(val["id"])
    metrics = json.loads((prediction_dir / "report" / "metrics.json").read_text())
    assert set(metrics["predictions"]) == {"MS", "MS+CRF"}
    assert metrics["predictions"]["MS"]["num_scored"] == 3
    assert (prediction_dir / "report" / "per_class_iou.png").is_file()
    assert result["report"]["predictions"]["MS"]["mean_iou"] == metrics["predictions"]["MS"]["mean_iou"]

    # The saved model loads and segments through the standard pipeline.
    segmenter = pipeline("image-segmentation", model=str(output))
    image = val[0]["image"]
    segments = segmenter(image)
    assert segments and all(s["mask"].size == image.size for s in segments)
    assert {s["label"] for s in segments} <= {"background", "disc", "square"}


def test_training_resumes_from_a_checkpoint_to_the_same_weights(shapes, tmp_path):
    train, _, pseudo = shapes
    data, model_args, test, crf = _run_arguments(pseudo)
    data.eval_split = None

    torch.manual_seed(0)
    run_deeplab(data, model_args, test, crf, _training_args(tmp_path / "a"), train_dataset=train)
    uninterrupted = load_file(tmp_path / "a" / "run" / "model.safetensors")

    # A run stopped after step 2: only its checkpoint-2 exists. `last` picks it up and finishes the 4 steps.
    (tmp_path / "b" / "run").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "run" / "checkpoint-2", tmp_path / "b" / "run" / "checkpoint-2")
    (tmp_path / "b" / "run" / "checkpoint-3").mkdir()  # killed while saving (no trainer_state.json): skipped
    torch.manual_seed(123)  # the model's fresh init is overwritten by the checkpoint
    result = run_deeplab(
        data, model_args, test, crf, _training_args(tmp_path / "b", resume_from_checkpoint="last"), train_dataset=train
    )
    resumed = load_file(tmp_path / "b" / "run" / "model.safetensors")
    state = json.loads((tmp_path / "b" / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and result["train"] is not None
    assert uninterrupted.keys() == resumed.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], msg=key)


def test_resume_last_without_a_complete_checkpoint_is_a_clear_error(tmp_path):
    """Both stages resolve `--resume_from_checkpoint` with `trainer.resolve_resume_checkpoint`: stage 2 also refuses
    `last` when nothing was saved yet (stage 1: tests/test_train_script.py), before loading any data."""
    data, model_args, test, crf = _run_arguments(tmp_path / "pseudo")
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint in .*run"):
        run_deeplab(data, model_args, test, crf, _training_args(tmp_path, resume_from_checkpoint="last"))
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"checkpoint-2 was not written completely"):
        run_deeplab(
            data,
            model_args,
            test,
            crf,
            _training_args(tmp_path, resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2")),
        )
