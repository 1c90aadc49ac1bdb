# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one prediction job that stage-1 pseudo-labelling and stage-2 prediction share."""

import ast
import inspect
import logging
import textwrap

import numpy as np
import pytest

from cpfcte_hf.models.cpfcte.crf import DenseCRFConfig
from cpfcte_hf.models.cpfcte.visualization import read_mask
from cpfcte_hf.prediction.job import gather_counts, run_prediction_job


IDS = ["a", "bad_read", "c", "bad_model", "sub/e"]
BATCH_SIZES = []  # the batches the job hands to `predict`


def _image(index: int) -> np.ndarray:
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, 16:] = 200 + index  # two flat halves: the CRF keeps the left/right split
    return image


def _probabilities(rgb: np.ndarray) -> np.ndarray:
    probabilities = np.full((2, *rgb.shape[:2]), 0.2, np.float32)
    probabilities[0, :, :16] = probabilities[1, :, 16:] = 0.8
    return probabilities


def read(index):
    if IDS[index] == "bad_read":
        raise OSError("cannot identify image file")
    return _image(index), IDS[index], None


def predict(items):
    BATCH_SIZES.append(len(items))
    if any(image_id == "bad_model" for _, image_id in items):
        raise RuntimeError("out of memory")
    return [_probabilities(rgb) for rgb, _ in items]


@pytest.mark.parametrize("crf_workers", [0, 1])
def test_masks_failures_retries_and_resume(tmp_path, caplog, crf_workers):
    BATCH_SIZES.clear()
    mask_dir, crf_dir = tmp_path / "bpm", tmp_path / "crf"
    with caplog.at_level(logging.WARNING):
        counts = run_prediction_job(
            IDS, read, predict, mask_dir, crf_dir, DenseCRFConfig(), crf_workers, batch_size=4, progress=False
        )
    assert counts.written == 3 and counts.already_done == 0
    assert [(f.id, f.stage) for f in counts.failures] == [("bad_read", "read"), ("bad_model", "model")]
    assert "[bad_model] model failed: RuntimeError: out of memory" in caplog.text
    # The failed batch of 3 readable images (a, c, bad_model) is retried image by image, then the last one.
    assert BATCH_SIZES == [3, 1, 1, 1, 1]
    expected = (np.arange(32)[None].repeat(24, 0) >= 16).astype(np.uint8)
    for image_id in ("a", "c", "sub/e"):
        np.testing.assert_array_equal(read_mask(mask_dir / f"{image_id}.png"), expected)
        np.testing.assert_array_equal(read_mask(crf_dir / f"{image_id}.png"), expected)
    assert not (crf_dir / "bad_model.png").exists()

    # A rerun does only the images without masks; a CRF mask missing means the image is redone.
    (crf_dir / "c.png").unlink()
    again = run_prediction_job(IDS, read, predict, mask_dir, crf_dir, DenseCRFConfig(), crf_workers, progress=False)
    assert (again.written, again.already_done, len(again.failures)) == (1, 2, 2)
    assert gather_counts(None, again) is again


def test_crf_failures_and_downscaled_images_are_restored_to_their_size(tmp_path):
    def read_small(index):
        return _image(index)[::2, ::2].copy(), None, (24, 32)

    def predict_wrong_classes(items):  # a CRF of a map whose size is not the image's fails in the pool
        return [_probabilities(rgb)[:, :, :-1] if i == 1 else _probabilities(rgb) for i, (rgb, _) in enumerate(items)]

    counts = run_prediction_job(
        ["x", "y"],
        read_small,
        predict_wrong_classes,
        tmp_path / "ms",
        tmp_path / "ms_crf",
        crf_workers=0,
        batch_size=2,
        progress=False,
    )
    assert counts.written == 1 and [(f.id, f.stage) for f in counts.failures] == [("y", "crf")]
    assert read_mask(tmp_path / "ms" / "x.png").shape == (24, 32)
    assert read_mask(tmp_path / "ms_crf" / "x.png").shape == (24, 32)


def test_without_crf_only_the_argmax_masks(tmp_path):
    counts = run_prediction_job(
        ["a", "c"], lambda i: (_image(i), None, None), predict, tmp_path / "ms", progress=False
    )
    assert counts.written == 2 and not counts.failures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ms"]


def test_both_stages_run_the_one_job():
    from cpfcte_hf import pseudo_labeling
    from cpfcte_hf.deeplab import training

    for function in (pseudo_labeling.generate_pseudo_labels, training.predict_split):
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        called = {
            node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert "run_prediction_job" in called and "CRFPool" not in called, function.__qualname__


def test_stage_two_resumes_only_with_the_same_model_and_settings(tmp_path):
    """The fingerprint rule of stage 1 also holds for stage 2: masks of other weights or settings are not reused."""
    import torch

    from cpfcte_hf.data.shapes import load_shapes
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split
    from cpfcte_hf.utils.fingerprint import FingerprintMismatch

    from .deeplab_helpers import tiny_deeplab_config

    val = load_shapes("val", num_val=2, image_size=40, num_classes=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    out = tmp_path / "predictions"
    settings = dict(scales=(1.0,), crf=False, num_overlays=0, progress=False)
    first = predict_split(model, val, out, MultiScaleEvalConfig(**settings))
    assert (first["written"], first["already_done"]) == (2, 0) and (out / "fingerprint.json").is_file()
    again = predict_split(model, val, out, MultiScaleEvalConfig(**settings))
    assert (again["written"], again["already_done"]) == (0, 2)

    with pytest.raises(FingerprintMismatch, match="scales"):
        predict_split(model, val, out, MultiScaleEvalConfig(**{**settings, "scales": (1.0, 0.5)}))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights
    with pytest.raises(FingerprintMismatch, match="model_weights"):
        predict_split(model, val, out, MultiScaleEvalConfig(**settings))
    redone = predict_split(model, val, out, MultiScaleEvalConfig(**settings, overwrite=True))
    assert (redone["written"], redone["already_done"]) == (2, 0)


DISAGREEING_PROCESSES = """
import os, sys
from cpfcte_hf.prediction.job import prepare_job_dir
from cpfcte_hf.utils.distributed import distributed_state

state = distributed_state()
fingerprint = {"kind": "test", "model_weights": "abc" if state.process_index == 0 else "abd", "size": 192}
try:
    prepare_job_dir(sys.argv[1], fingerprint, overwrite=False, mask_dirs=[], state=state)
except ValueError as error:
    print(f"rank {state.process_index}: {error}", flush=True)
    sys.exit(3)
print(f"rank {state.process_index}: no error", flush=True)
"""


@pytest.mark.slow
def test_processes_that_disagree_on_the_weights_stop_together(tmp_path):
    """Two processes of one job with different weights (e.g. BatchNorm statistics left per rank by DDP): both stop
    with an error naming what differs, and nothing is recorded, instead of writing masks of two models."""
    import subprocess

    from tests.utils import accelerate_launch, subprocess_env

    script = tmp_path / "job.py"
    script.write_text(DISAGREEING_PROCESSES)
    command = [*accelerate_launch(2), str(script), str(tmp_path / "job")]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: The 2 processes of this job disagree on model_weights" in result.stdout, result.stdout
    assert "no error" not in result.stdout
    assert not (tmp_path / "job" / "fingerprint.json").exists()
