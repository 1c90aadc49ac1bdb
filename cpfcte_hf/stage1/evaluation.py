# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 1's evaluation during training: the mIoU of the patch classifier's masks on the eval split (one streaming
confusion matrix; logits reduced before they are gathered), and the pictures of a few images written at each
evaluation.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..evaluation import load_wsss_mean_iou
from ..models.cpfcte.image_processing_cpfcte import class_probability_maps
from ..models.cpfcte.metrics import scores_from_confusion_matrix


class SegmentationEvalMetrics:
    """
    `compute_metrics` for `Trainer`: the mIoU of the whole evaluation split through the package's `evaluate` metric
    module (`evaluation/wsss_mean_iou`: one confusion matrix, streamed batch by batch with `add_batch` under
    `batch_eval_metrics=True`, or all at once), returning `mean_iou`, `pixel_accuracy` and `iou_<class>`.

    Expects `EvalPrediction.predictions` to be class-id maps `(B, H, W)` (see `make_preprocess_logits_for_metrics`)
    and `label_ids` to be `(image_labels, masks)` or `masks`.
    """

    def __init__(self, num_labels: int, class_names=None, ignore_index: int = 255):
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        # In memory, one instance per run: processes and runs side by side share no cache file.
        self.metric = load_wsss_mean_iou(keep_in_memory=True)

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict | None:
        masks = eval_prediction.label_ids
        if isinstance(masks, (tuple, list)):
            masks = masks[-1]
        predictions = eval_prediction.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        if isinstance(predictions, torch.Tensor):
            predictions = predictions.detach().cpu().numpy()
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu().numpy()
        self.metric.add_batch(predictions=list(np.asarray(predictions)), references=list(np.asarray(masks)))
        if not compute_result:
            return None
        result = self.metric.compute(num_labels=self.num_labels, ignore_index=self.ignore_index)
        scores = scores_from_confusion_matrix(result["confusion_matrix"], num_images=result["num_images"])
        # A class absent from both the ground truth and the predictions has no IoU: leave it out rather than
        # report None, which the Trainer's logging cannot format.
        return {key: value for key, value in scores.to_dict(self.class_names).items() if value is not None}


def make_preprocess_logits_for_metrics(mask_by_image_labels: bool = True):
    """
    `preprocess_logits_for_metrics` for `Trainer`: patch logits `(B, C, h, w)` -> class ids at the mask size
    `(B, H, W)` (int32), per batch, so that only small integer maps are gathered. With `mask_by_image_labels`
    the image-level labels suppress absent classes and each present class is max-normalised (pseudo-label
    quality, as in ViT-PCM's validation); without, it is the plain argmax.
    """

    def preprocess_logits_for_metrics(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        image_labels, masks = (labels[0], labels[-1]) if isinstance(labels, (tuple, list)) else (None, labels)
        probabilities = class_probability_maps(
            logits, image_labels if mask_by_image_labels else None, target_size=tuple(masks.shape[-2:])
        )
        return probabilities.argmax(dim=1).to(torch.int32)

    return preprocess_logits_for_metrics


class EvalPicturesCallback(TrainerCallback):
    """
    After each evaluation with a mIoU, draws what a person looks at: the per-class IoU as a bar plot, and the first
    `num_examples` validation images as panels (image | ground truth | pseudo-label). The PNGs go to
    `output_dir/eval_pictures/step-N/` and, when TensorBoard logging is on, into TensorBoard.
    """

    def __init__(self, trainer: Trainer, num_examples: int = 4):
        self.trainer = trainer
        self.num_examples = num_examples

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        trainer = self.trainer
        if not metrics or "eval_mean_iou" not in metrics or not trainer.is_world_process_zero():
            return
        from PIL import Image

        from ..models.cpfcte.visualization import plot_per_class_iou, save_overlay_panels

        model = trainer.accelerator.unwrap_model(trainer.model)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        directory = os.path.join(args.output_dir, "eval_pictures", f"step-{state.global_step}")
        iou = [metrics.get(f"eval_iou_{name}") for name in names]
        paths = {
            "per_class_iou": plot_per_class_iou(
                os.path.join(directory, "per_class_iou.png"),
                {"pseudo-label": iou},
                names,
                title=f"step {state.global_step}",
            )
        }
        paths.update(self._example_panels(model, names, directory, save_overlay_panels))
        writer = next(
            (
                getattr(cb, "tb_writer", None)
                for cb in trainer.callback_handler.callbacks
                if getattr(cb, "tb_writer", None)
            ),
            None,
        )
        if writer is not None:
            for tag, path in paths.items():
                picture = np.asarray(Image.open(path).convert("RGB"))
                writer.add_image(f"eval/{tag}", picture, state.global_step, dataformats="HWC")
            writer.flush()

    def _example_panels(self, model, names, directory, save_overlay_panels) -> dict:
        dataset = self.trainer.eval_dataset
        if dataset is None or self.num_examples <= 0:
            return {}
        processor = self.trainer.processing_class
        mean = torch.tensor(getattr(processor, "image_mean", (0.5, 0.5, 0.5))).view(3, 1, 1)
        std = torch.tensor(getattr(processor, "image_std", (0.5, 0.5, 0.5))).view(3, 1, 1)
        paths = {}
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for index in range(min(self.num_examples, len(dataset))):
                item = dataset[index]
                if "masks" not in item:
                    break
                pixel_values = item["pixel_values"][None].to(device)
                logits = model(pixel_values).logits
                prediction = class_probability_maps(
                    logits, item["labels"][None].to(device), tuple(item["masks"].shape)
                )
                image = ((item["pixel_values"] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
                path = os.path.join(directory, f"example_{index}.png")
                panels = {"ground truth": item["masks"].numpy(), "pseudo-label": prediction.argmax(1)[0].cpu().numpy()}
                paths[f"example_{index}"] = save_overlay_panels(path, image.numpy(), panels, names)
        model.train(was_training)
        return paths
