"""Stage 2's multi-scale test fusion: ours (at the image size) and kazuto1011's (at the 1.0 scale's logit size)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
from cpfcte_hf.models.deeplab_v2.processing import IMAGENET_MEAN, IMAGENET_STD
from cpfcte_hf.prediction.fusion import fused_probabilities
from cpfcte_hf.prediction.segment import MultiScaleEvalConfig, stage_two_fingerprint
from cpfcte_hf.stage2.train import parse_arguments

from .deeplab_helpers import tiny_deeplab_config


def _kazuto_msc_test(model, image: np.ndarray, pyramids=(0.5, 0.75)) -> torch.Tensor:
    """kazuto1011's test path written out from its description (libs/models/msc.py in eval mode, then main.py's
    upsampling): normalise at the image's size, the pyramid resized from that tensor to int(p * side), every scale's
    logits resized to the original logits' size, the max, then bilinear to (H, W) with align_corners=False, softmax."""
    height, width = image.shape[:2]
    x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    logits = model(pixel_values=x).logits
    all_logits = [logits]
    for p in pyramids:
        h = F.interpolate(x, size=[int(s * p) for s in x.shape[2:]], mode="bilinear", align_corners=False)
        scaled = model(pixel_values=h).logits
        all_logits.append(F.interpolate(scaled, size=logits.shape[2:], mode="bilinear", align_corners=False))
    fused = torch.max(torch.stack(all_logits), dim=0)[0]
    fused = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False)
    return F.softmax(fused, dim=1)[0]


@torch.no_grad()
def test_logits_fusion_reproduces_kazuto1011s_geometry_on_a_toy_image():
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)  # odd sides: int(0.75 * 37) = 27, not 28
    expected = _kazuto_msc_test(model, image)
    ours = fused_probabilities(model, image, (1.0, 0.75, 0.5), False, IMAGENET_MEAN, IMAGENET_STD, fusion="logits")
    assert ours.shape == (3, 37, 50)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # The default fuses elsewhere (8k+1 inputs, at the image size, align_corners=True): a different map.
    image_fused = fused_probabilities(model, image, (1.0, 0.75, 0.5), False, IMAGENET_MEAN, IMAGENET_STD)
    assert (image_fused - expected).abs().max() > 1e-3


@torch.no_grad()
def test_logits_fusion_with_flip_undoes_each_flip_before_the_max():
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    image = np.random.default_rng(1).integers(0, 256, size=(33, 41, 3), dtype=np.uint8)
    plain = fused_probabilities(model, image, (1.0, 0.5), True, IMAGENET_MEAN, IMAGENET_STD, fusion="logits")
    mirrored = fused_probabilities(
        model, np.ascontiguousarray(image[:, ::-1]), (1.0, 0.5), True, IMAGENET_MEAN, IMAGENET_STD, fusion="logits"
    )
    torch.testing.assert_close(plain, mirrored.flip(-1), rtol=1e-4, atol=1e-5)  # flip-symmetric by construction


def test_the_option_is_checked_at_parse_time_and_changes_the_fingerprint():
    _, _, test, _, _ = parse_arguments(["--config", "deeplab_voc", "--test_fusion", "logits"])
    assert test.test_fusion == "logits"
    with pytest.raises(SystemExit):
        parse_arguments(["--config", "deeplab_voc", "--test_fusion", "logits", "--test_scales", "0.5"])
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config())
    fingerprints = [
        stage_two_fingerprint(model, MultiScaleEvalConfig(fusion=fusion), IMAGENET_MEAN, IMAGENET_STD)
        for fusion in ("image", "logits")
    ]
    assert "fusion" not in fingerprints[0] and fingerprints[1]["fusion"] == "logits"
