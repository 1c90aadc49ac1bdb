# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The weakly supervised pseudo-labelling pipeline and the image-segmentation pipeline of CPF-CTE models.

Both run the inference core of `inference` (shared with `pseudo_labeling` and stage 2). docs/method.md section 3,
for one image and its image-level tags:

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
imports, relatively, only `class_names`, `image_processing_cpfcte`, `inference`, `crf` and `visualization` (which
takes `IGNORE_INDEX` from `metrics`), leaves that import nothing else from the package.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoModelForSemanticSegmentation, ImageSegmentationPipeline, Pipeline
from transformers.image_utils import load_image
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING
from transformers.pipelines import PIPELINE_REGISTRY

from .class_names import class_ids_from_tags
from .crf import DenseCRFConfig, crf_mask
from .image_processing_cpfcte import VIT_PCM_MEAN, VIT_PCM_STD, class_probability_maps, to_rgb_array
from .inference import (
    DEFAULT_INFERENCE_SIZE,
    check_image_size,
    forward_views,
    fuse_views,
    inference_sizes,
    make_views,
    multi_hot,
)
from .visualization import mask_to_image


PSEUDO_LABELLING_TASK = "weakly-supervised-pseudo-labelling"


def _tagged_class_ids(tags, id2label) -> list[int] | None:
    """The class ids of an image's tags (background added), `None` without tags (`tags=None`: every class competes).

    Raises:
        ValueError: an empty tag list (it would suppress every object class and leave an all-background mask), or
            an unknown tag.
    """
    if tags is None:
        return None
    if not isinstance(tags, (str, int, np.integer)):
        tags = list(tags)
    if tags == []:
        raise ValueError(
            "tags=[]: an empty tag list would suppress every object class and give an all-background mask. For an "
            "image without tags, leave `tags` out (tags=None: every class competes) or use "
            'pipeline("image-segmentation").'
        )
    return class_ids_from_tags(tags, id2label)


class WeaklySupervisedPseudoLabelingPipeline(Pipeline):
    """
    Pseudo-label one image from its image-level tags with a CPF-CTE model: task
    `"weakly-supervised-pseudo-labelling"`.

    Call arguments (all optional except the image):
        tags: class names or ids present in the image (background is added). With tags, absent classes are
            suppressed and each present class map is max-normalised (training-set pseudo-labels); without, all
            classes compete (`tags=None`, the default). Unknown tags raise a ValueError listing the valid names, an
            empty list a ValueError (it would leave only background). An input may also be a dict
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
        class_ids = _tagged_class_ids(tags, id2label)
        mean = getattr(self.image_processor, "image_mean", None) or VIT_PCM_MEAN
        std = getattr(self.image_processor, "image_std", None) or VIT_PCM_STD
        sizes = inference_sizes(size, scales, self.model.config.patch_size)
        views, flipped = make_views([rgb], sizes, flip, mean, std)
        return {"views": views, "flipped": flipped, "image": rgb, "class_ids": class_ids}

    def _forward(self, model_inputs):
        logits, image_scores = forward_views(self.model, model_inputs["views"])
        return {
            "logits": logits,
            "image_scores": image_scores,
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

    def check_model_type(self, supported_models):
        """transformers checks the model's class name against its own segmentation models only, and logs "The model
        ... is not supported" for any other. A model registered with `AutoModelForSemanticSegmentation` for its
        config (this package's CPF-CTE and DeepLab-v2, by `import cpfcte_hf`) is supported; any other model is
        checked as by the parent class."""
        config_class = type(self.model.config)
        if config_class in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING:
            if MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING[config_class] is type(self.model):
                return
        super().check_model_type(supported_models)

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
    "class_ids_from_tags",
]
