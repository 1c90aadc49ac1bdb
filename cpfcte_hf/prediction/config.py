# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The settings of a prediction job, for both stages: one `PredictionConfig` (scales, flip, CRF, workers, reports),
which stage 1's pseudo-labelling extends (`PseudoLabelConfig`: size, image-level label masking, the CRF's input
geometry and size cap, batch) and stage 2's multi-scale testing extends (`MultiScaleEvalConfig`: scales of the
image's own size fused by max, the fusion). Light on purpose (no torch), so that the command line builds them before
anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..models.cpfcte.crf import DEFAULT_CRF_MAX_SIDE, DenseCRFConfig
from ..utils.options import build_from_options


def config_from_options(config_type, options, prefix: str = "", **values):
    """A prediction config from a command's options: `prefix + name` (stage 2's `test_scales`, ...) or else `name`
    (`build_from_options`); `values` (e.g. the CRF options' `crf_config`) win."""
    return build_from_options(config_type, options, (prefix, "") if prefix else ("",), **values)


# kazuto1011's test scales, fused by max.
MULTI_SCALE = (1.0, 0.75, 0.5)


@dataclass
class PredictionConfig:
    """
    What every prediction job takes, stage 1's pseudo-labels and stage 2's multi-scale test alike (each stage's
    config adds its own settings to these).

    Attributes:
        scales: the scales of the views (stage 1: multipliers of its inference size, averaged; stage 2: of the
            image's own size, fused by max).
        flip: also run the left-right flipped views.
        crf: refine with the dense CRF (`crf_config`, docs/method.md section 3).
        crf_config: CRF parameters.
        crf_workers: CRF worker processes per process (`None`: the CPUs divided by the processes; 0: serial).
        overwrite: recompute masks that exist.
        num_overlays: overlay panels written with the report.
        progress: show a progress bar on the main process.
        report_html: write `report.html` and its thumbnails (`cpfcte_hf.evaluation.html_report`) next to the masks.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = True
    crf_config: DenseCRFConfig = field(default_factory=DenseCRFConfig)
    crf_workers: int | None = None
    overwrite: bool = False
    num_overlays: int = 4
    progress: bool = True
    report_html: bool = True

    def __post_init__(self):
        if isinstance(self.crf_config, Mapping):
            self.crf_config = DenseCRFConfig(**self.crf_config)
        self.scales = tuple(float(s) for s in self.scales)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MultiScaleEvalConfig(PredictionConfig):
    """
    Test-time settings of stage 2 (docs/method.md section 4).

    Attributes:
        scales: multipliers of the image's own size, fused by max (`(1.0, 0.75, 0.5)`; `(1.0,)` = single scale).
        flip: also run each scale flipped left-right (not in the recipe of docs/method.md section 4).
        fusion: where the scales are fused by max (`prediction.fusion`): `image` (ours: each scale's logits upsampled to
            the image with `align_corners=True`) or `logits` (kazuto1011: at the 1.0 scale's logit size,
            `align_corners=False`, then upsampled).
        crf: refine the fused probabilities with the dense CRF (`crf_config`, docs/method.md section 3).
        crf_workers: CRF worker processes per process (`None`: the CPUs divided by the processes; 0: serial).
        overwrite: recompute masks that exist (otherwise a rerun only does the missing ones).
        num_overlays: image | ground truth | predictions panels written with the report.
        progress: show a progress bar on the main process.
        report_html: write `report.html` and its thumbnails (`cpfcte_hf.evaluation.html_report`) next to the masks.
    """

    scales: tuple[float, ...] = MULTI_SCALE
    fusion: str = "image"

    def __post_init__(self):
        super().__post_init__()
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"`scales` must be positive numbers, got {self.scales}.")
        check_test_fusion(self.fusion)
        if self.fusion == "logits" and 1.0 not in self.scales:
            raise ValueError(f"--test_fusion logits fuses at the 1.0 scale's logits: add 1.0 to {list(self.scales)}.")


@dataclass
class PseudoLabelConfig(PredictionConfig):
    """
    Settings of a pseudo-labelling run.

    Attributes:
        size: inference resolution (square side, a multiple of the patch size after rounding); `None` = the
            checkpoint's `config.inference_size` (960, as in ViT-PCM, for checkpoints that do not record one).
        scales: multipliers of `size`; the views' probability maps are averaged (`(1.0,)` = single scale).
        flip: also run the left-right flipped image and average.
        use_image_labels: mask absent classes with the image-level labels and max-normalise each class
            (training-set pseudo-labels). Off: every class competes (e.g. for images without tags).
        crf: refine with the dense CRF and write `crf/`.
        crf_config: CRF parameters (docs/method.md section 3).
        crf_upsampling: the geometry of the CRF's input (`upsampling`): `align_corners` (ours: the BPM's map) or
            `half_pixel` (ViT-PCM's: scikit-image's resize of the grid probabilities).
        crf_workers: CRF worker processes per process; `None` = the CPUs available divided by the number of
            processes; 0 = serial in the main process.
        crf_max_side: longest side, in pixels, at which the probability maps are upsampled and the CRF runs
            (`None` or 0: the image's own size). A larger image is downscaled to it first (antialiased) and its
            masks are upsampled back (nearest) and written at the original size. It bounds the memory of a CRF
            worker for phone photos; VOC (500 px) and COCO (640 px) images are below the default and unchanged.
        batch_size: images per model call.
        overwrite: recompute every mask (the old masks, report and summary are deleted first). Without it, an
            output directory made with other settings (`pseudo_label_fingerprint`) is refused.
        num_overlays: overlay panels written in the report.
        progress: show a tqdm bar (main process only).
        report_html: write `OUT/report.html` and its thumbnails (`cpfcte_hf.evaluation.html_report`) at the end.
    """

    size: int | None = None
    use_image_labels: bool = True
    crf_upsampling: str = "align_corners"
    crf_max_side: int | None = DEFAULT_CRF_MAX_SIDE
    batch_size: int = 1

    def __post_init__(self):
        super().__post_init__()
        if (self.size is not None and int(self.size) < 1) or not self.scales or min(self.scales) <= 0:
            raise ValueError(f"`size` must be >= 1 and `scales` positive, got size={self.size}, scales={self.scales}.")
        if int(self.batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        check_crf_upsampling(self.crf_upsampling)
        if self.crf_max_side is not None and int(self.crf_max_side) < 0:
            raise ValueError(f"`crf_max_side` must be >= 0 (0 or None: no cap), got {self.crf_max_side}.")


CRF_UPSAMPLING = ("align_corners", "half_pixel")


def check_crf_upsampling(value: str) -> str:
    if value not in CRF_UPSAMPLING:
        raise ValueError(
            f"--crf_upsampling must be 'align_corners' (ours, as the BPM) or 'half_pixel' (ViT-PCM's CRF input, "
            f"scikit-image's resize), got {value!r}."
        )
    return value


TEST_FUSIONS = ("image", "logits")


def check_test_fusion(fusion: str) -> str:
    if fusion not in TEST_FUSIONS:
        raise ValueError(
            f"--test_fusion must be 'image' (ours: at the image size, align_corners=True) or 'logits' "
            f"(kazuto1011: at the 1.0 scale's logit size, align_corners=False), got {fusion!r}."
        )
    return fusion
