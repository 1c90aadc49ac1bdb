# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one inference core: a leaf module that the pipelines, stage-1 pseudo-labelling and stage-2 prediction share."""

import ast
from pathlib import Path

import numpy as np
import torch

import cpfcte_hf
from cpfcte_hf.models.cpfcte import inference


PACKAGE = Path(cpfcte_hf.__file__).parent
MODEL_FILES = PACKAGE / "models" / "cpfcte"  # the pipelines' remote-code set
# What `pipelines.py` may import relatively, so that it loads as remote code without the package.
LEAVES = {"class_names", "image_processing_cpfcte", "crf", "visualization", "metrics"}


def relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}


def test_inference_is_a_leaf_and_the_pipelines_import_only_leaves():
    assert relative_imports(MODEL_FILES / "inference.py") <= LEAVES
    assert relative_imports(MODEL_FILES / "pipelines.py") <= LEAVES | {"inference"}


def test_both_stages_and_the_pipelines_call_the_one_core():
    import cpfcte_hf.prediction.segment as training
    from cpfcte_hf import pseudo_labeling
    from cpfcte_hf.models.cpfcte import pipelines

    for name in ("predict_class_probabilities", "check_image_size", "multi_hot", "cap_image_side"):
        assert getattr(pseudo_labeling, name) is getattr(inference, name)
    for name in ("make_views", "fuse_views", "forward_views", "inference_sizes", "check_image_size"):
        assert getattr(pipelines, name) is getattr(inference, name)
    # Stage 2's default test fusion is the core's; kazuto1011's (`--test_fusion logits`) sits beside it.
    from cpfcte_hf.prediction import fusion

    assert training.fused_probabilities is fusion.fused_probabilities
    assert fusion.max_fused_probabilities is inference.max_fused_probabilities
    # Nothing outside the core defines an inference step, and stage 2 takes none from stage 1 or the pipelines.
    steps = set(inference.__all__) - {"DEFAULT_INFERENCE_SIZE"}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "inference.py":
            continue
        defined = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
        assert not defined & steps, (
            f"{path} defines {sorted(defined & steps)}, which live in cpfcte_hf/models/cpfcte/inference.py"
        )
    for stage_two in (PACKAGE / "prediction" / "segment.py", *(PACKAGE / "stage2").glob("*.py")):
        assert not {module.rsplit(".", 1)[-1] for module in relative_imports(stage_two)} & {"pipelines"}


def test_corner_aligned_sizes_are_8k_plus_1():
    assert inference.corner_aligned_sizes([(96, 90), (48, 45), (3, 3)], 8) == [(97, 89), (49, 49), (9, 9)]


def test_max_fused_probabilities_of_a_model_without_image_scores():
    """A DeepLab-like output (logits only): the views' upsampled logits fused by max, then the softmax."""

    class Logits(torch.nn.Module):
        config = type("Config", (), {"align_corners": False})()

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, pixel_values):
            return type("Output", (), {"logits": self.conv(pixel_values[:, :, ::2, ::2])})()

    model = Logits().eval()
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    probabilities = inference.max_fused_probabilities(model, image, (1.0, 0.5), True, (0.5,) * 3, (0.5,) * 3)
    assert probabilities.shape == (2, 20, 30)
    torch.testing.assert_close(probabilities.sum(dim=0), torch.ones(20, 30))
