"""CPFCTETrainer with a real transformers Trainer loop on tiny in-memory data."""

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments, default_data_collator

from cpfcte_hf import CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.models.cpfcte.image_processing_cpfcte import class_probability_maps
from cpfcte_hf.models.cpfcte.metrics import SegmentationMetric
from cpfcte_hf.stage1.evaluation import SegmentationEvalMetrics
from cpfcte_hf.stage1.schedule import StageLearningRate, encoder_parameter_groups
from cpfcte_hf.stage1.trainer import CPFCTETrainer, CPFCTETrainingArguments
from tests.utils import tiny_config


class TinySegmentationSet(torch.utils.data.Dataset):
    """Random 32x32 images with random masks; labels = classes present in the mask (background always)."""

    def __init__(self, size: int, with_masks: bool = True, seed: int = 0, nan_at: int | None = None):
        generator = torch.Generator().manual_seed(seed)
        self.pixel_values = torch.randn(size, 3, 32, 32, generator=generator)
        self.masks = torch.randint(0, 4, (size, 32, 32), generator=generator)
        self.masks[:, :4, :4] = 255  # some ignored pixels
        self.with_masks = with_masks
        if nan_at is not None:
            self.pixel_values[nan_at] = float("nan")

    def __len__(self):
        return len(self.pixel_values)

    def __getitem__(self, index):
        labels = torch.zeros(4)
        present = self.masks[index].unique()
        labels[present[present != 255]] = 1
        labels[0] = 1
        item = {"pixel_values": self.pixel_values[index], "labels": labels}
        if self.with_masks:
            item["masks"] = self.masks[index]
        return item


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=3,
        stage1_epochs=1,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=3,
        dataloader_num_workers=0,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        trainable_encoder_blocks=1,
        save_total_limit=None,
    )
    values.update(overrides)
    return CPFCTETrainingArguments(**values)


def _trainer(tmp_path, model=None, train_size=8, eval_size=5, **overrides):
    torch.manual_seed(0)
    model = model or CPFCTEForWeaklySupervisedSegmentation(tiny_config(context_fusion_dropout=0.0))
    return CPFCTETrainer(
        model=model,
        args=_args(tmp_path, **overrides),
        train_dataset=TinySegmentationSet(train_size, with_masks=False),
        eval_dataset=TinySegmentationSet(eval_size, seed=1),
        data_collator=default_data_collator,
    )


def test_defaults_follow_the_paper():
    args = CPFCTETrainingArguments(output_dir="unused")
    assert args.learning_rate == 1e-4 and args.stage1_learning_rate == 1e-3 and args.stage1_epochs == 2
    assert args.stage1_freeze_encoder and args.trainable_encoder_blocks == 5
    assert args.weight_decay == 0.0 and args.num_train_epochs == 50 and args.seed == 1234
    assert args.metric_for_best_model == "mean_iou" and args.load_best_model_at_end
    assert args.remove_unused_columns is False and args.label_names == ["labels", "masks"]


def test_two_stage_schedule_freezes_then_trains_the_last_blocks(tmp_path):
    trainer = _trainer(tmp_path, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    model = trainer.model
    snapshot = {name: p.detach().clone() for name, p in model.named_parameters()}
    stage1_states = {}

    class RecordAfterStage1(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == trainer.stage1_steps:
                stage1_states.update({n: p.detach().clone() for n, p in model.named_parameters()})

    trainer.add_callback(RecordAfterStage1())
    trainer.train()
    assert trainer.stage1_steps == 2  # 1 epoch of 8 images at batch 4

    def changed(state_a, state_b, prefix):
        return any(not torch.equal(state_a[n], state_b[n]) for n in state_a if n.startswith(prefix))

    # Stage 1: heads train, the encoder does not move.
    assert changed(snapshot, stage1_states, "patch_classifier")
    assert changed(snapshot, stage1_states, "class_token_fusion")
    assert changed(snapshot, stage1_states, "context_fusion")
    assert not changed(snapshot, stage1_states, "vit.")
    # Stage 2: the last block and the final norm train; earlier blocks and the embeddings never do.
    final = {n: p.detach() for n, p in model.named_parameters()}
    assert changed(stage1_states, final, "vit.layers.1.")
    assert changed(stage1_states, final, "vit.layernorm.")
    assert not changed(snapshot, final, "vit.layers.0.")
    assert not changed(snapshot, final, "vit.embeddings.")

    # Learning rate: 1e-3 for the stage-1 steps, then 1e-4.
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates[:2] == [1e-3, 1e-3] and set(rates[2:]) == {1e-4}


def test_from_scratch_schedule_trains_the_whole_encoder(tmp_path):
    trainer = _trainer(
        tmp_path,
        stage1_epochs=0,
        trainable_encoder_blocks=-1,
        stage1_freeze_encoder=False,
        num_train_epochs=1,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
    )
    before = trainer.model.vit.embeddings.patch_embeddings.projection.weight.detach().clone()
    trainer.train()
    assert trainer.stage1_steps == 0
    assert not torch.equal(before, trainer.model.vit.embeddings.patch_embeddings.projection.weight)
    rates = {entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}
    assert rates == {1e-4}


def test_encoder_groups_and_too_many_blocks():
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    never, stage2 = encoder_parameter_groups(model, 1)
    vit_params = list(model.vit.parameters())
    assert len(never) + len(stage2) == len(vit_params)
    assert any(p is model.vit.layernorm.weight for p in stage2)
    assert any(p is model.vit.embeddings.patch_embeddings.projection.weight for p in never)
    with pytest.raises(ValueError, match="encoder has 2 blocks"):
        encoder_parameter_groups(model, 5)


def test_evaluation_reports_the_pseudo_label_miou_of_the_split(tmp_path):
    trainer = _trainer(tmp_path, num_train_epochs=1)
    metrics = trainer.evaluate()
    # The same number computed by hand: class masking by image labels, upsample, argmax, one confusion matrix.
    dataset = trainer.eval_dataset
    model = trainer.model.eval()
    metric = SegmentationMetric(4)
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            logits = model(item["pixel_values"][None]).logits
            prediction = class_probability_maps(logits, item["labels"][None], (32, 32)).argmax(1)[0]
            metric.update(prediction.numpy(), item["masks"].numpy())
    expected = metric.compute()
    assert metrics["eval_mean_iou"] == pytest.approx(expected.mean_iou)
    assert metrics["eval_num_images"] == 5
    assert metrics["eval_iou_background"] == pytest.approx(expected.per_class_iou[0])
    # ...and the pictures a person looks at.
    pictures = tmp_path / "run" / "eval_pictures" / "step-0"
    assert (pictures / "per_class_iou.png").is_file()
    assert sorted(p.name for p in pictures.glob("example_*.png")) == [f"example_{i}.png" for i in range(4)]


def test_classes_absent_from_the_split_are_left_out_of_the_metrics(tmp_path):
    from transformers import EvalPrediction

    metrics = SegmentationEvalMetrics(4, ["background", "a", "b", "c"])
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[:, :4] = 1
    result = metrics(EvalPrediction(predictions=masks.clone(), label_ids=(torch.ones(2, 4), masks)))
    assert result["mean_iou"] == 1.0 and result["iou_a"] == 1.0
    assert "iou_b" not in result and "iou_c" not in result  # no ground truth, no prediction: no IoU


def test_best_checkpoint_by_miou_is_reloaded_with_its_encoder(tmp_path):
    trainer = _trainer(tmp_path, stage1_epochs=0, stage1_freeze_encoder=False, learning_rate=5e-3)
    trainer.train()
    history = [entry for entry in trainer.state.log_history if "eval_mean_iou" in entry]
    best = max(history, key=lambda entry: entry["eval_mean_iou"])
    assert trainer.state.best_metric == pytest.approx(best["eval_mean_iou"])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    saved = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(trainer.state.best_model_checkpoint)
    for (name, expected), actual in zip(saved.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    torch.manual_seed(0)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    trainer = CPFCTETrainer(
        model=model,
        args=_args(tmp_path, eval_strategy="no", save_strategy="no", load_best_model_at_end=False),
        train_dataset=TinySegmentationSet(8, with_masks=False, nan_at=5),
        data_collator=default_data_collator,
    )
    trainer.args.seed = 0
    with pytest.raises(FloatingPointError, match=r"loss became nan at step \d+"):
        trainer.train()


def test_wrong_arguments_are_refused(tmp_path):
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config())
    with pytest.raises(TypeError, match="CPFCTETrainingArguments"):
        CPFCTETrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path)))


def test_stage_learning_rate_warmup_and_stage2_decays():
    constant = StageLearningRate(stage1_steps=2, stage1_factor=10.0, warmup_steps=4)
    assert [constant(step) for step in range(6)] == [2.5, 5.0, 0.75, 1.0, 1.0, 1.0]
    cosine = StageLearningRate(stage1_steps=2, stage1_factor=10.0, stage2_decay="cosine", total_steps=6)
    assert cosine(1) == 10.0 and cosine(2) == 1.0 and cosine(4) == pytest.approx(0.5) and cosine(6) == 0.0
    linear = StageLearningRate(stage1_steps=0, stage1_factor=1.0, stage2_decay="linear", total_steps=4)
    assert [linear(step) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="stage-2 schedule"):
        StageLearningRate(0, 1.0, stage2_decay="polynomial")
