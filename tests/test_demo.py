"""scripts/demo.py (what `make demo` runs), shrunk to seconds: every stage runs and leaves what the README promises."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils import subprocess_env


REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "scripts" / "demo.py")


def tiny_demo(demo_dir, *extra):
    """The demo preset with 32-px images, a 2-layer 32-wide ViT and 24 training images."""
    return [
        sys.executable, DEMO, "--config", str(REPO / "scripts" / "configs" / "demo.yaml"),
        "--demo_dir", str(demo_dir),
        "--shapes_num_train", "24", "--shapes_num_val", "6", "--shapes_image_size", "32", "--inference_size", "64",
        "--image_size", "32", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2",
        "--intermediate_size", "64", "--lstm_hidden_size", "8", "--max_steps", "4", "--warmup_steps", "1",
        "--per_device_train_batch_size", "8", "--logging_steps", "1", "--crf_workers", "0",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    demo_dir = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        tiny_demo(demo_dir), capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return demo_dir, result


def test_demo_prints_the_table_and_writes_results(demo_run):
    demo_dir, result = demo_run
    results = json.loads((demo_dir / "demo_results.json").read_text())
    for key in ("pseudo_label_miou_bpm", "pseudo_label_miou_crf"):
        assert 0.0 <= results[key] <= 1.0, key
    names = list(results["per_class_iou"])
    assert names[0] == "background" and len(names) == 6  # 5 procedural classes + background
    assert len(results["seconds"]) == 3 and all(seconds > 0 for seconds in results["seconds"].values())
    assert results["failed_images"] == 0
    assert results["arguments"]["ModelArguments"]["context_fusion_residual"] is True  # the documented preset
    # The console table carries the same numbers.
    assert "CPF-CTE demo" in result.stdout
    assert f"{100 * results['pseudo_label_miou_crf']:5.1f}" in result.stdout


def test_demo_leaves_masks_report_and_pictures(demo_run):
    demo_dir, _ = demo_run
    val_ids = (demo_dir / "data" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert len(val_ids) == 6
    for kind in ("bpm", "crf"):
        for item in val_ids:
            mask = Image.open(demo_dir / "pseudo_labels" / kind / f"{item}.png")
            assert mask.mode == "P" and mask.size == (32, 32)
            assert np.asarray(mask).max() <= 5
    report = demo_dir / "pseudo_labels" / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["predictions"]) == {"BPM", "CRF"}
    assert (report / "per_class_iou.png").stat().st_size > 0
    overlays = sorted((report / "overlays").glob("*.png"))
    assert overlays and Image.open(overlays[0]).width > 3 * 32  # image | ground truth | BPM | CRF panels


def test_demo_checkpoint_loads_in_the_pipeline(demo_run):
    from transformers import pipeline

    import cpfcte_hf  # noqa: F401  (registers the Auto classes)

    demo_dir, _ = demo_run
    segmenter = pipeline("image-segmentation", model=str(demo_dir / "model"))
    image = Image.open(next((demo_dir / "data" / "JPEGImages").iterdir())).convert("RGB")
    segments = segmenter(image)
    assert segments and {"score", "label", "mask"} <= set(segments[0])
    assert {segment["label"] for segment in segments} <= set(segmenter.model.config.id2label.values())
    assert segments[0]["mask"].size == image.size
