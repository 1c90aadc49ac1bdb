# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The weakly supervised pseudo-labelling pipeline, and the inference steps it shares with `pseudo_labeling`.

docs/method.md section 3, for one image and its image-level tags:

1. resize to the inference resolution (960 by default; optional extra scales and a horizontal flip);
2. patch probabilities; with tags, zero the classes the image does not have, divide each class map by its
   spatial maximum and renormalise (`class_probability_maps`);
3. bilinear upsampling (align_corners=True) to the original size; argmax = baseline pseudo mask (BPM);
4. dense CRF at the original resolution (`crf.dense_crf`).

```python
>>> from transformers import pipeline
>>> import cpfcte_hf  # registers the task
>>> labeller = pipeline("weakly-supervised-pseudo-labelling", model="path/to/cpfcte-checkpoint")
>>> result = labeller("2007_000032.jpg", tags=["aeroplane", "person"])
>>> result["mask"], result["bpm"], result["scores"]   # CRF mask and BPM as VOC palette images; class -> score
```

`labeller.save_pretrained(dir)` writes this file (and the files it imports) next to the weights; another machine
then loads it with `pipeline(model=dir, trust_remote_code=True)` without this package. For that, this file
imports, relatively, only `class_names`, `image_processing_cpfcte`, `crf` and `visualization` (which takes
`IGNORE_INDEX` from `metrics`), leaves that import nothing else from the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoModelForSemanticSegmentation, ImageSegmentationPipeline, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .class_names import class_ids_from_tags
from .crf import DenseCRFConfig, crf_mask
from .image_processing_cpfcte import (
    VIT_PCM_MEAN,
    VIT_PCM_STD,
    class_probability_maps,
    resize_and_normalize,
    to_rgb_array,
)
from .visualization import mask_to_image


PSEUDO_LABELLING_TASK = "weakly-supervised-pseudo-labelling"
DEFAULT_INFERENCE_SIZE = 960


def multi_hot(class_ids: Iterable[int], num_labels: int) -> torch.Tensor:
    """Class ids -> `(num_labels,)` float multi-hot vector."""
    target = torch.zeros(num_labels, dtype=torch.float32)
    ids = list(class_ids)
    if ids and (min(ids) < 0 or max(ids) >= num_labels):
        raise ValueError(f"Class ids {ids} are outside 0..{num_labels - 1}.")
    target[ids] = 1.0
    return target


def check_image_size(image, patch_size: int, name: str = "image") -> None:
    """Raises a ValueError naming `name` if the image (an array, or its `(height, width)`) is smaller than one
    `patch_size` patch in either side."""
    height, width = image if isinstance(image, tuple) else image.shape[:2]
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"{name} is {width}x{height} pixels, smaller than one {patch_size}x{patch_size} patch: too small to segment."
        )


def inference_sizes(size, scales: Sequence[float], patch_size: int) -> list[tuple[int, int]]:
    """`(height, width)` per scale: `size` (an int or `(h, w)`) times the scale, rounded to a multiple of the patch."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    sizes = []
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"Scales must be > 0, got {scale}.")
        sizes.append(
            (
                max(patch_size, round(height * scale / patch_size) * patch_size),
                max(patch_size, round(width * scale / patch_size) * patch_size),
            )
        )
    return sizes


def make_views(
    images: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    flip: bool = False,
    image_mean: Sequence[float] = VIT_PCM_MEAN,
    image_std: Sequence[float] = VIT_PCM_STD,
) -> tuple[list[torch.Tensor], list[bool]]:
    """
    `(H, W, 3)` uint8 images -> one `pixel_values` batch `(B, 3, h, w)` per view (every size, each also flipped
    left-right when `flip`), and whether each view is flipped.
    """
    views, flipped = [], []
    for size in sizes:
        pixel_values = resize_and_normalize(list(images), size, image_mean, image_std)
        views.append(pixel_values)
        flipped.append(False)
        if flip:
            views.append(pixel_values.flip(-1))
            flipped.append(True)
    return views, flipped


def fuse_views(
    view_logits: Sequence[torch.Tensor],
    flipped: Sequence[bool],
    target_sizes: Sequence[tuple[int, int]],
    labels: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """
    Patch logits of every view -> one `(C, H, W)` class probability map per image at its original size.

    Each view goes through `class_probability_maps` (softmax, class masking by `labels` `(B, C)` with per-class max
    normalisation, bilinear upsampling with align_corners=True); flipped views are flipped back (on the patch grid:
    align_corners=True upsampling commutes with the flip) and the views are averaged.
    """
    maps = []
    for index, target_size in enumerate(target_sizes):
        total = None
        image_labels = labels[index : index + 1] if labels is not None else None
        for logits, is_flipped in zip(view_logits, flipped):
            image_logits = logits[index : index + 1]
            if is_flipped:
                image_logits = image_logits.flip(-1)
            probabilities = class_probability_maps(image_logits, image_labels, tuple(target_size))[0]
            total = probabilities if total is None else total + probabilities
        maps.append(total / len(view_logits))
    return maps


@torch.no_grad()
def predict_class_probabilities(
    model,
    images: Sequence[np.ndarray],
    labels: torch.Tensor | None = None,
    size=DEFAULT_INFERENCE_SIZE,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    image_mean: Sequence[float] = VIT_PCM_MEAN,
    image_std: Sequence[float] = VIT_PCM_STD,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """
    Class probability maps of a batch of images (docs/method.md section 3, steps 1-3).

    Args:
        model: a CPF-CTE model (anything returning `logits` `(B, C, h, w)` and `image_scores` `(B, C)`).
        images: `(H, W, 3)` uint8 RGB images, sizes may differ.
        labels: `(B, C)` multi-hot image-level labels for class masking (training-set pseudo-labels), or `None`.
        size, scales, flip: inference resolution, its multipliers, and whether to add flipped views.
        image_mean, image_std: normalisation (the image processor's).

    Returns:
        `(C, H, W)` float32 maps on the CPU, one per image, and `(B, C)` image scores averaged over the views.
    """
    patch_size = model.config.patch_size
    views, flipped = make_views(images, inference_sizes(size, scales, patch_size), flip, image_mean, image_std)
    device = next(model.parameters()).device
    view_logits, image_scores = [], 0.0
    for pixel_values in views:
        outputs = model(pixel_values=pixel_values.to(device))
        view_logits.append(outputs.logits.float())
        image_scores = image_scores + outputs.image_scores.float()
    maps = fuse_views(view_logits, flipped, [image.shape[:2] for image in images], labels)
    return [m.cpu() for m in maps], (image_scores / len(views)).cpu()


class WeaklySupervisedPseudoLabelingPipeline(Pipeline):
    """
    Pseudo-label one image from its image-level tags with a CPF-CTE model: task
    `"weakly-supervised-pseudo-labelling"`.

    Call arguments (all optional except the image):
        tags: class names or ids present in the image (background is added). With tags, absent classes are
            suppressed and each present class map is max-normalised (training-set pseudo-labels); without, all
            classes compete. Unknown tags raise a ValueError listing the valid names. An input may also be a dict
            `{"image": ..., "tags": [...]}`, so that a list of images can carry one tag list each.
        size: inference resolution (int or `(h, w)`), default the checkpoint's `config.inference_size` (960 when
            it has none).
        scales: multipliers of `size`, views averaged (default `(1.0,)`).
        flip: also run the left-right flipped image (default False).
        crf: refine with the dense CRF (default True).
        crf_config: a `DenseCRFConfig` or a dict of its fields (docs/method.md section 3).

    Returns one dict per image:
        mask: PIL "P" image (VOC palette) of class ids: the CRF-refined mask (the BPM when `crf=False`).
        bpm: PIL "P" image: the baseline pseudo mask (argmax before the CRF).
        labels: names of the classes in `mask`.
        scores: `{class name: image-level score}` from the model's pooled patch probabilities.
        tags: names of the classes the mask was restricted to (`None` without tags).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, tags=None, size=None, scales=None, flip=None, crf=None, crf_config=None, timeout=None, **kwargs
    ):
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {sorted(kwargs)} for the pseudo-labelling pipeline.")
        preprocess, postprocess = {}, {}
        if tags is not None:
            preprocess["tags"] = tags
        if size is not None:
            preprocess["size"] = size
        if scales is not None:
            preprocess["scales"] = tuple(float(s) for s in scales)
        if flip is not None:
            preprocess["flip"] = bool(flip)
        if timeout is not None:
            preprocess["timeout"] = timeout
        if crf is not None:
            postprocess["crf"] = bool(crf)
        if crf_config is not None:
            postprocess["crf_config"] = (
                crf_config if isinstance(crf_config, DenseCRFConfig) else DenseCRFConfig(**dict(crf_config))
            )
        return preprocess, {}, postprocess

    def __call__(self, inputs, **kwargs):
        """`inputs`: an image (PIL, path, URL, array) or `{"image": ..., "tags": ...}`, or a list of those."""
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, tags=None, size=None, scales=(1.0,), flip=False, timeout=None):
        if size is None:  # the checkpoint's (set by its training preset); 960 for checkpoints without one
            size = getattr(self.model.config, "inference_size", None) or DEFAULT_INFERENCE_SIZE
        if isinstance(inputs, dict):
            if "image" not in inputs:
                raise ValueError("A dict input needs an 'image' key (and optionally 'tags').")
            tags = inputs.get("tags", tags)
            inputs = inputs["image"]
        if isinstance(inputs, (str, os.PathLike)):
            inputs = load_image(os.fspath(inputs), timeout=timeout)
        elif isinstance(inputs, Image.Image):  # as displayed, like a path (load_image) and the datasets
            inputs = ImageOps.exif_transpose(inputs)
        rgb = to_rgb_array(inputs)
        check_image_size(rgb, self.model.config.patch_size)
        id2label = self.model.config.id2label
        class_ids = class_ids_from_tags(tags, id2label) if tags is not None else None
        mean = getattr(self.image_processor, "image_mean", None) or VIT_PCM_MEAN
        std = getattr(self.image_processor, "image_std", None) or VIT_PCM_STD
        sizes = inference_sizes(size, scales, self.model.config.patch_size)
        views, flipped = make_views([rgb], sizes, flip, mean, std)
        return {"views": views, "flipped": flipped, "image": rgb, "class_ids": class_ids}

    def _forward(self, model_inputs):
        logits, scores = [], []
        for pixel_values in model_inputs["views"]:
            outputs = self.model(pixel_values=pixel_values)
            logits.append(outputs.logits.float())
            scores.append(outputs.image_scores.float())
        return {
            "logits": logits,
            "image_scores": torch.stack(scores).mean(dim=0),
            "flipped": model_inputs["flipped"],
            "image": model_inputs["image"],
            "class_ids": model_inputs["class_ids"],
        }

    def postprocess(self, model_outputs, crf=True, crf_config=None):
        image = model_outputs["image"]
        class_ids = model_outputs["class_ids"]
        num_labels = self.model.config.num_labels
        id2label = self.model.config.id2label
        labels = multi_hot(class_ids, num_labels)[None] if class_ids is not None else None
        probabilities = fuse_views(model_outputs["logits"], model_outputs["flipped"], [image.shape[:2]], labels)[0]
        probabilities = probabilities.numpy()
        bpm = probabilities.argmax(axis=0).astype(np.uint8)
        mask = crf_mask(image, probabilities, crf_config) if crf else bpm
        scores = model_outputs["image_scores"][0]
        return {
            "mask": mask_to_image(mask),
            "bpm": mask_to_image(bpm),
            "labels": [id2label[int(c)] for c in np.unique(mask)],
            "scores": {id2label[i]: float(scores[i]) for i in range(num_labels)},
            "tags": [id2label[c] for c in class_ids] if class_ids is not None else None,
        }


class CPFCTEImageSegmentationPipeline(ImageSegmentationPipeline):
    """
    transformers' `pipeline("image-segmentation")`, with the image-level scores of a CPF-CTE model.

    For a CPF-CTE model (`config.model_type == "cpfcte"`) each returned `{"label", "mask", "score"}` carries in
    `score` the class's image-level score (the model's Top-K pooled patch probability, `outputs.image_scores`)
    instead of `None`. Call arguments:

        threshold: drop the foreground classes whose image-level score is below it: their pixels go to the best
            remaining class (background is always kept). Default `None`: every class competes, the same masks as
            transformers' semantic post-processing.

    An image smaller than one patch raises a `ValueError`. Any other model is handled exactly as by the parent class
    (`threshold` keeps its panoptic/instance meaning there).
    """

    def _is_cpfcte(self) -> bool:
        return getattr(self.model.config, "model_type", None) == "cpfcte"

    def _sanitize_parameters(self, **kwargs):
        threshold = kwargs.pop("threshold", None) if self._is_cpfcte() else None
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if threshold is not None:
            threshold = float(threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold must be in [0, 1] (an image-level score), got {threshold}.")
            postprocess["threshold"] = threshold
        return preprocess, forward, postprocess

    def preprocess(self, image, subtask=None, timeout=None):
        inputs = super().preprocess(image, subtask=subtask, timeout=timeout)
        if self._is_cpfcte():
            check_image_size(tuple(inputs["target_size"][0]), self.model.config.patch_size)
        return inputs

    def postprocess(self, model_outputs, subtask=None, threshold=None, **kwargs):
        if not self._is_cpfcte() or subtask not in (None, "semantic"):
            if threshold is not None:
                kwargs["threshold"] = threshold
            return super().postprocess(model_outputs, subtask=subtask, **kwargs)
        scores = model_outputs["image_scores"][0].float()
        keep = torch.ones_like(scores) if threshold is None else (scores >= threshold).float()
        keep[0] = 1.0
        logits = model_outputs["logits"]
        size = tuple(model_outputs["target_size"][0])
        probabilities = class_probability_maps(
            logits, None if threshold is None else keep[None], size, normalize=False
        )
        segmentation = probabilities[0].argmax(dim=0).numpy()
        id2label = self.model.config.id2label
        annotation = []
        for label in np.unique(segmentation):
            mask = Image.fromarray(((segmentation == label) * 255).astype(np.uint8), mode="L")
            annotation.append({"score": float(scores[label]), "label": id2label[int(label)], "mask": mask})
        return annotation


PIPELINE_REGISTRY.register_pipeline(
    PSEUDO_LABELLING_TASK,
    pipeline_class=WeaklySupervisedPseudoLabelingPipeline,
    pt_model=AutoModelForSemanticSegmentation,
    type="image",
)


# `pipeline("image-segmentation")` builds this subclass: the same as transformers' class for every other model.
PIPELINE_REGISTRY.supported_tasks["image-segmentation"]["impl"] = CPFCTEImageSegmentationPipeline


__all__ = [
    "CPFCTEImageSegmentationPipeline",
    "DEFAULT_INFERENCE_SIZE",
    "PSEUDO_LABELLING_TASK",
    "WeaklySupervisedPseudoLabelingPipeline",
    "check_image_size",
    "class_ids_from_tags",
    "fuse_views",
    "inference_sizes",
    "make_views",
    "multi_hot",
    "predict_class_probabilities",
]
