# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Image processor for CPF-CTE, and the one place that decides how images are decoded, resized and normalised.

Everything in the package that turns an image into `pixel_values` (training transforms, the image processor,
the pipelines, pseudo-labelling, DeepLab) calls `to_rgb_array` and `resize_and_normalize`; everything that
turns patch scores back into a mask calls `class_probability_maps`.

This file is copied next to the weights by `save_pretrained` (remote code): it imports only numpy, PIL, torch
and transformers.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling


VIT_PCM_MEAN = (0.5, 0.5, 0.5)
VIT_PCM_STD = (0.5, 0.5, 0.5)


def to_rgb_array(image, convert_rgb: bool = True) -> np.ndarray:
    """
    Any image as an `(H, W, 3)` uint8 RGB array.

    Accepts PIL images of any mode (RGB, RGBA, LA, P, L, CMYK, YCbCr, I;16, I, F), and numpy arrays or torch tensors
    shaped `(H, W)`, `(H, W, C)` or `(C, H, W)` with C in {1, 3, 4}. Alpha is dropped (not composited), grey is
    repeated, and 16-bit or float images are scaled to 0..255 (floats in [0, 1] are taken as such).
    With `convert_rgb=False` the channels are kept as they are (`(H, W, C)`, C in {1, 3, 4}; PIL images in their own
    mode's bands); only the values are brought to uint8.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image)
        elif convert_rgb:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        else:
            array = np.asarray(image)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    else:
        array = np.asarray(image)

    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Cannot read an image of shape {array.shape}: expected (H, W), (H, W, C) or (C, H, W).")
    if convert_rgb:
        array = array[..., :3]
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)

    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float64))
        if array.max(initial=0.0) <= 1.0:
            array = array * 255.0
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.dtype == np.uint16 or array.max(initial=0) > 255:
        return (array.astype(np.float64) * (255.0 / 65535.0)).round().clip(0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def resize_and_normalize(
    images: Sequence[np.ndarray] | np.ndarray,
    size: tuple[int, int],
    image_mean: Sequence[float] = VIT_PCM_MEAN,
    image_std: Sequence[float] = VIT_PCM_STD,
    resample: int = PILImageResampling.BILINEAR,
) -> torch.Tensor:
    """
    `(H, W, 3)` uint8 RGB images -> `pixel_values` `(B, 3, size[0], size[1])` float32.

    Resizes without keeping the aspect ratio (as ViT-PCM does), scales to [0, 1], then `(x - mean) / std`
    (mean = std = 0.5 maps to [-1, 1]). Images of another channel count C (all the same) work alike, each channel
    resized on its own, with C means and stds.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    height, width = int(size[0]), int(size[1])
    channels = images[0].shape[-1] if len(images) else 3
    if len(image_mean) != channels or len(image_std) != channels:
        raise ValueError(
            f"`image_mean` and `image_std` need one value per channel ({channels}); got {len(image_mean)} and "
            f"{len(image_std)}."
        )
    batch = np.empty((len(images), height, width, channels), dtype=np.float32)
    for i, image in enumerate(images):
        if image.shape[-1] != channels:
            raise ValueError(f"Image {i} has {image.shape[-1]} channels, the first one {channels}.")
        if image.shape[:2] != (height, width):
            if channels == 3:
                image = np.asarray(Image.fromarray(image).resize((width, height), resample=resample))
            else:
                image = np.stack(
                    [
                        np.asarray(Image.fromarray(image[..., c]).resize((width, height), resample=resample))
                        for c in range(channels)
                    ],
                    axis=-1,
                )
        batch[i] = image
    pixel_values = torch.from_numpy(batch).permute(0, 3, 1, 2)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, channels, 1, 1) * 255.0
    std = torch.tensor(image_std, dtype=torch.float32).view(1, channels, 1, 1) * 255.0
    return ((pixel_values - mean) / std).contiguous()


def merge_class_labels(probabilities: torch.Tensor, labels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """
    ViT-PCM's `merge_class_labels`: class probabilities `(B, C, h, w)` with the image-level `labels` `(B, C)`
    (multi-hot) applied: absent classes zeroed, then (with `normalize`) each class map divided by its spatial maximum
    and the result renormalised over classes (0/0 gives 0).
    """
    labels = labels.to(device=probabilities.device, dtype=probabilities.dtype)
    if labels.shape != probabilities.shape[:2]:
        raise ValueError(
            f"`labels` must have shape (batch_size, num_labels) = {tuple(probabilities.shape[:2])}, "
            f"got {tuple(labels.shape)}."
        )
    probabilities = probabilities * labels[:, :, None, None]
    if normalize:
        peak = probabilities.amax(dim=(2, 3), keepdim=True)
        probabilities = torch.where(peak > 0, probabilities / peak.clamp_min(1e-12), torch.zeros_like(peak))
        total = probabilities.sum(dim=1, keepdim=True)
        probabilities = torch.where(total > 0, probabilities / total.clamp_min(1e-12), probabilities)
    return probabilities


def class_probability_maps(
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    target_size: tuple[int, int] | None = None,
    normalize: bool | None = None,
) -> torch.Tensor:
    """
    Patch scores `(B, C, h, w)` -> class probability maps `(B, C, H, W)` (docs/method.md section 3, ViT-PCM `infer`).

    1. softmax over classes;
    2. with image-level `labels` `(B, C)` (multi-hot, background included): zero the absent classes, divide each
       class map by its spatial maximum, and renormalise over classes (`normalize=False` skips the last two);
    3. bilinear upsampling with `align_corners=True` to `target_size`.

    The argmax over classes is the baseline pseudo mask (BPM).
    """
    probabilities = logits.float().softmax(dim=1)
    if labels is not None:
        probabilities = merge_class_labels(probabilities, labels, normalize is None or normalize)
    if target_size is not None and tuple(probabilities.shape[-2:]) != tuple(target_size):
        probabilities = F.interpolate(probabilities, size=tuple(target_size), mode="bilinear", align_corners=True)
    return probabilities


class CPFCTEImageProcessor(PilBackend):
    r"""
    Image processor for CPF-CTE (PIL based, no torchvision): converts to RGB, resizes to `size` without keeping
    the aspect ratio, scales to [0, 1] and normalises with ViT-PCM's mean = std = 0.5.

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"height": 384, "width": 384}`):
            Output size; both sides must be multiples of the model's patch size. The paper trains at 384 and
            makes pseudo-labels at a higher resolution (960 by default in `scripts/pseudo_label.py`).
        image_mean, image_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Normalisation, applied after scaling to [0, 1].
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`):
            Resampling filter for the resize.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Convert every image to 3-channel RGB (grey repeated, alpha dropped). With `False` each image keeps its
            own channels (1, 3 or 4; `image_mean` / `image_std` must then have one value per channel), for
            encoders configured with `num_channels` other than 3.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = list(VIT_PCM_MEAN)
    image_std = list(VIT_PCM_STD)
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size,
        resample,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_convert_rgb: bool | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if not (do_resize and do_rescale and do_normalize) or abs(rescale_factor - 1 / 255) > 1e-12:
            raise ValueError(
                "CPFCTEImageProcessor always resizes, rescales by 1/255 and normalises: the model was trained on "
                "exactly that input. Change `size`, `image_mean` or `image_std` instead."
            )
        convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        arrays = [to_rgb_array(np.moveaxis(image, 0, -1), convert_rgb=convert_rgb) for image in images]
        pixel_values = resize_and_normalize(
            arrays,
            (size.height, size.width),
            image_mean,
            image_std,
            resample if resample is not None else self.resample,
        )
        if return_tensors in ("pt", "torch"):
            return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=None)
        return BatchFeature(data={"pixel_values": list(pixel_values.numpy())}, tensor_type=return_tensors)

    @classmethod
    def for_backbone(cls, backbone_name_or_path: str, **kwargs) -> "CPFCTEImageProcessor":
        """
        A processor that normalises as the encoder `backbone_name_or_path` (Hub id or folder) was pretrained: the
        `image_mean` / `image_std` of its `preprocessor_config.json` (ImageNet's for DINOv2, CLIP's own for CLIP,
        0.5 / 0.5 for the ViT-PCM and SigLIP checkpoints). Without such a file, ViT-PCM's 0.5 / 0.5. `kwargs` (e.g.
        `size=...`, `cache_dir=...`) go to the processor and to the download.
        """
        hub_keys = ("cache_dir", "revision", "token", "local_files_only")
        hub_kwargs = {key: kwargs.pop(key) for key in hub_keys if key in kwargs}
        try:
            pretrained, _ = cls.get_image_processor_dict(backbone_name_or_path, **hub_kwargs)
        except OSError:
            pretrained = {}
        for key in ("image_mean", "image_std"):
            if key not in kwargs and pretrained.get(key) is not None:
                kwargs[key] = list(pretrained[key])
        return cls(**kwargs)

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        labels: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """
        Model outputs -> one `(H, W)` tensor of class ids per image.

        Args:
            outputs: the model's output (anything with `.logits` of shape `(B, C, h, w)`).
            target_sizes (`list[tuple[int, int]]`, *optional*): `(height, width)` per image; defaults to the patch grid.
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Return, per image, a [`SemanticSegmentationPostProcessorOutput`] with `segmentation` (the class ids,
                `(H, W)`) and `segmentation_scores` (the class probability maps whose argmax they are, `(C, H, W)`),
                as transformers' semantic-segmentation processors do.
            labels (`torch.Tensor` of shape `(B, C)`, *optional*): image-level multi-hot labels. When given, absent
                classes are suppressed and each present class map is max-normalised, as for training-set pseudo-labels.
        """
        logits = outputs.logits
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"Got {len(target_sizes)} target sizes for a batch of {len(logits)} images.")
        results = []
        for i in range(len(logits)):
            target_size = tuple(int(s) for s in target_sizes[i]) if target_sizes is not None else None
            image_labels = labels[i : i + 1] if labels is not None else None
            probabilities = class_probability_maps(logits[i : i + 1], image_labels, target_size)[0]
            segmentation = probabilities.argmax(dim=0)
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": probabilities}
                    )
                )
            else:
                results.append(segmentation)
        return results


__all__ = [
    "CPFCTEImageProcessor",
    "class_probability_maps",
    "merge_class_labels",
    "resize_and_normalize",
    "to_rgb_array",
]
