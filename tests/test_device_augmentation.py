"""Augmentation on the training device: loader workers decode + resize, the trainer augments after the transfer."""

import numpy as np
import pytest
import torch

from cpfcte_hf import CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.data.transforms import AugmentationConfig, TrainTransform, WeakSegmentationCollator
from cpfcte_hf.stage1.trainer import CPFCTETrainer, CPFCTETrainingArguments
from tests.utils import tiny_config


NUM_LABELS = 4


def _rows(count=6, seed=0):
    """A batch of rows as a loader hands them to the transform: 40x52 RGB images, class ids, masks."""
    rng = np.random.default_rng(seed)
    return {
        "image": [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(count)],
        "labels": [[1], [2, 3], [], [3], [1, 2], [2]][:count],
        "mask": [rng.integers(0, NUM_LABELS, (40, 52), dtype=np.uint8) for _ in range(count)],
        "id": [f"img{i}" for i in range(count)],
    }


class RowsDataset(torch.utils.data.Dataset):
    """Rows of `_rows` through a batch transform, one row at a time (as `datasets.Dataset.with_transform` does)."""

    def __init__(self, transform, count=6):
        self.rows = _rows(count)
        self.transform = transform

    def __len__(self):
        return len(self.rows["id"])

    def __getitem__(self, index):
        out = self.transform({key: [values[index]] for key, values in self.rows.items()})
        return {key: value[0] for key, value in out.items()}


def test_loader_and_device_placement_give_the_same_batch():
    augmentation = AugmentationConfig(grayscale_p=0.5)  # every step is drawn for some images of the batch
    in_loader = TrainTransform(NUM_LABELS, size=32, augmentation=augmentation, with_masks=True)
    deferred = TrainTransform(NUM_LABELS, size=32, augmentation=augmentation, with_masks=True, augment_in_loader=False)
    rows = _rows()

    torch.manual_seed(7)
    expected = in_loader(rows)
    loader_side = deferred(rows)
    assert loader_side["pixel_values"].dtype == torch.uint8 and loader_side["pixel_values"].shape == (6, 3, 32, 32)
    torch.manual_seed(7)
    pixel_values, masks = deferred.batch_augmentation(loader_side["pixel_values"], loader_side["masks"])

    assert pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values, expected["pixel_values"], rtol=0, atol=0)
    assert torch.equal(masks, expected["masks"])
    # The augmentation did something: the deferred images are not the augmented ones before it runs.
    unaugmented = (loader_side["pixel_values"].float() - 127.5) / 127.5
    assert not torch.allclose(unaugmented, expected["pixel_values"])


def test_collator_keeps_uint8_images():
    transform = TrainTransform(NUM_LABELS, size=32, augment_in_loader=False)
    batch = WeakSegmentationCollator()([RowsDataset(transform)[i] for i in range(3)])
    assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].dtype == torch.float32


def test_batch_augmentation_rejects_float_images():
    transform = TrainTransform(NUM_LABELS, size=32)
    with pytest.raises(ValueError, match="uint8"):
        transform.batch_augmentation(torch.rand(2, 3, 32, 32))


def _args(tmp_path, **overrides):
    return CPFCTETrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=3,
        dataloader_num_workers=0,
        report_to="none",
        use_cpu=True,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        metric_for_best_model=None,
        label_names=["labels"],
        trainable_encoder_blocks=-1,
        **overrides,
    )


def test_augmentation_device_argument(tmp_path):
    assert _args(tmp_path).augmentation_device == "auto"
    assert _args(tmp_path).resolved_augmentation_device() == "loader"  # on the CPU it stays in the loader
    assert _args(tmp_path, augmentation_device="device").resolved_augmentation_device() == "device"
    with pytest.raises(ValueError, match="augmentation_device"):
        _args(tmp_path, augmentation_device="gpu")


def test_trainer_augments_uint8_batches_after_the_transfer(tmp_path):
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(num_labels=NUM_LABELS))
    transform = TrainTransform(NUM_LABELS, size=32, augment_in_loader=False)
    calls = []

    def recording_augmentation(images, masks=None):
        pixel_values, masks = transform.batch_augmentation(images, masks)
        calls.append((images, pixel_values))
        return pixel_values, masks

    trainer = CPFCTETrainer(
        model=model,
        args=_args(tmp_path, augmentation_device="device", max_steps=2),
        train_dataset=RowsDataset(transform),
        data_collator=WeakSegmentationCollator(),
        batch_augmentation=recording_augmentation,
    )
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["pixel_values"]), with_kwargs=True)
    trainer.train()

    assert len(calls) == 2 == len(seen)
    for (images, augmented), pixel_values in zip(calls, seen):
        assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)  # the loader stopped after the resize
        assert pixel_values.dtype == torch.float32 and pixel_values is augmented  # the model got the trainer's output

    # Without the augmentation to finish them, uint8 batches stop with a message instead of training on raw levels.
    trainer.batch_augmentation = None
    with pytest.raises(ValueError, match="batch_augmentation"):
        trainer.train()


@pytest.mark.parametrize("placement, dtype", [("auto", torch.float32), ("device", torch.uint8)])
def test_run_training_wires_the_placement(tmp_path, placement, dtype):
    from cpfcte_hf.stage1.train import DataArguments, ModelArguments, run_training

    model_args = ModelArguments(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model_args.top_k, model_args.lstm_hidden_size = 2, 8
    data_args = DataArguments(
        dataset="shapes",
        dataset_option=["num_train=6", "num_val=2", "image_size=32"],
        eval_split=None,
        cache_dir=str(tmp_path / "cache"),
    )
    trainer = run_training(model_args, data_args, _args(tmp_path, augmentation_device=placement, max_steps=1))

    assert trainer.state.global_step == 1
    assert (trainer.batch_augmentation is not None) == (placement == "device")  # auto on a CPU: in the loader
    assert next(iter(trainer.get_train_dataloader()))["pixel_values"].dtype == dtype
