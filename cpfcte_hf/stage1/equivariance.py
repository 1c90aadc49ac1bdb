# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""L_ET, the equivariance term of stage 1: the second view's target (the first view's patch probabilities put through
the same crop and resize), its loss, and the Trainer mixin that adds it.
"""

from __future__ import annotations

import torch

from ..data.transforms import apply_flips, crop_and_resize, make_mosaics, revert_flips, split_mosaics
from ..models.cpfcte.image_processing_cpfcte import merge_class_labels


def equivariance_target(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    view_flips: torch.Tensor,
    et_flips: torch.Tensor,
    et_boxes: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """
    ViT-PCM's L_ET target (`model.py` `compute_cce_loss`): the full view's patch probabilities `(B, C, h, w)` with
    the full view's flips undone, the second view's crop (`et_boxes`, in patches) and resize to `size` and its flips
    applied at patch level, then `merge_class_labels` with the image labels `(B, C)`. Returns `(B, C, *size)`.
    """
    canonical = revert_flips(probabilities, view_flips)
    return merge_class_labels(apply_flips(crop_and_resize(canonical, et_boxes, size), et_flips), labels)


def equivariance_loss(target: torch.Tensor, predicted: torch.Tensor, epsilon: float = 1e-7) -> torch.Tensor:
    """
    Keras' categorical cross-entropy between the target `(B, C, s, s)` (no gradient) and the predicted patch
    probabilities of the second views `(B, C, s, s)`: `-sum_c t log clip(p, eps, 1 - eps)` per patch, mean over
    patches and images.
    """
    predicted = predicted.float()
    predicted = predicted / predicted.sum(dim=1, keepdim=True)
    return -(target.detach().float() * predicted.clamp(epsilon, 1.0 - epsilon).log()).sum(dim=1).mean()


class EquivarianceLossMixin:
    """
    Adds ViT-PCM's L_ET to the model's loss when `args.equivariance_loss_weight > 0` and the batch carries the second
    views (`EquivarianceTrainTransform`):

    1. target: the model in eval mode (no dropout), without gradient, on the full views; `equivariance_target`;
    2. prediction: every 4 second views tiled into one mosaic (`make_mosaics`), run in training mode in the same
       forward call as the full views (one call, so DDP sees each parameter once), split back into views;
    3. loss = BCE + L2 (on the full views, the model's own) + weight * `equivariance_loss`.

    A batch of B images makes B // 4 mosaics; the remaining B % 4 images (a short last batch) get no L_ET term.
    """

    def model_loss(self, model, inputs):
        weight = self.args.equivariance_loss_weight
        if weight <= 0 or not model.training or "et_pixel_values" not in inputs:
            return super().model_loss(model, inputs)
        core = self.accelerator.unwrap_model(model)
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        batch_size = pixel_values.shape[0]
        used = 4 * (batch_size // 4)
        if used == 0:
            return super().model_loss(model, inputs)
        with torch.no_grad():
            core.eval()
            try:
                full = core(pixel_values=pixel_values[:used]).logits.float().softmax(dim=1)
            finally:
                core.train()
        mosaics = make_mosaics(inputs["et_pixel_values"][:used])
        if mosaics.shape[-2:] != pixel_values.shape[-2:]:
            raise ValueError(
                f"The L_ET mosaics are {tuple(mosaics.shape[-2:])} but the images {tuple(pixel_values.shape[-2:])}: "
                "the second views must be half the training size."
            )
        outputs = model(pixel_values=torch.cat([pixel_values, mosaics]))
        loss = core.compute_loss(outputs.image_scores[:batch_size], labels)
        predicted = split_mosaics(outputs.logits[batch_size:].float().softmax(dim=1))
        target = equivariance_target(
            full,
            labels[:used],
            inputs["view_flips"][:used],
            inputs["et_flips"][:used],
            inputs["et_box"][:used],
            tuple(predicted.shape[-2:]),
        )
        outputs.logits, outputs.image_scores = outputs.logits[:batch_size], outputs.image_scores[:batch_size]
        return loss + weight * equivariance_loss(target, predicted), outputs
