"""`cpfcte-hf run` (here through `cpfcte-hf demo`) with another stage-2 model than DeepLab-v2: the preset's
`train_segmenter:` section (the `train_deeplab:` section under its other name) names a transformers segmenter, the run
trains it, and run_summary.json, the model card and the demo's table say which model stage 2 was (issue 22)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cpfcte_hf.utils.arguments import PresetError, load_preset
from tests.test_demo import card_sections
from tests.utils import subprocess_env


REPO = Path(__file__).resolve().parents[1]

# The demo shrunk (as tests/test_demo.py), with a random-init SegFormer of two 8/16-wide stages as stage 2.
TINY_SEGFORMER_RUN = """\
base: demo
dataset_option: [num_train=12, num_val=4, image_size=32]
image_size: 32
inference_size: 32
hidden_size: 32
num_hidden_layers: 1
num_attention_heads: 2
intermediate_size: 64
lstm_hidden_size: 8
et_crop_size: 8
et_scale_size: 16
max_steps: 2
warmup_steps: 1
per_device_train_batch_size: 6
logging_steps: 1
report_to: none
label:
  size: 32
train_segmenter:
  model_type: segformer
  config_overrides:
    num_encoder_blocks: 2
    depths: [1, 1]
    sr_ratios: [2, 1]
    hidden_sizes: [8, 16]
    patch_sizes: [7, 3]
    strides: [4, 2]
    num_attention_heads: [1, 1]
    mlp_ratios: [2, 2]
    decoder_hidden_size: 16
  image_size: 32
  crop_size: 32
  max_steps: 3
  warmup_steps: 1
  per_device_train_batch_size: 4
  test_scales: [1.0, 0.5]
  report_to: none
"""


def test_a_train_segmenter_section_is_the_train_deeplab_section(tmp_path):
    preset = tmp_path / "segformer_run.yaml"
    preset.write_text(TINY_SEGFORMER_RUN)
    loaded = load_preset(preset)
    assert "train_segmenter" not in loaded and loaded["train_deeplab"]["model_type"] == "segformer"
    assert loaded["train_deeplab"]["resnet_layer_type"] == "basic"  # the demo's section, merged under either name
    both = tmp_path / "both.yaml"
    both.write_text("base: demo\ntrain_segmenter:\n  max_steps: 3\ntrain_deeplab:\n  max_steps: 4\n")
    with pytest.raises(PresetError, match="same section"):
        load_preset(both)


@pytest.mark.slow
def test_run_trains_the_segformer_the_preset_names_and_says_so(tmp_path):
    preset = tmp_path / "segformer_run.yaml"
    preset.write_text(TINY_SEGFORMER_RUN)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cpfcte_hf", "demo", "--config", str(preset), "--demo_dir", str(out),
               "--crf_workers", "0", "--override", "train_segmenter.max_steps=2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # The stage-2 checkpoint is a SegFormer (the override reached it under the section's other name) and serves
    # transformers' pipeline with transformers' own classes.
    from transformers import SegformerForSemanticSegmentation, pipeline

    segmenter = pipeline("image-segmentation", model=str(out / "stage2"))
    assert type(segmenter.model) is SegformerForSemanticSegmentation
    image = Image.open(next((out / "data" / "JPEGImages").iterdir())).convert("RGB")
    assert segmenter(image)[0]["mask"].size == image.size
    assert json.loads((out / "stage2" / "trainer_state.json").read_text())["global_step"] == 2

    # run_summary.json, the demo's results and table, and the card name the model stage 2 trained.
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    expected = {"model_type": "segformer", "checkpoint": None, "name": "segformer (random init)"}
    assert summary["stage2_model"] == expected
    assert json.loads((out / "demo_results.json").read_text())["stage2_model"] == expected
    assert "stage 2: segformer (random init)" in result.stdout
    sections = card_sections((out / "hub" / "README.md").read_text())
    stage2 = sections["Stage 2"]
    assert "here segformer (`cpfcte-hf" in stage2 and "The segformer of the stage-2 values" in stage2
    assert "random weights (built from its config)" in stage2 and "ASPP" not in stage2.split("The segformer")[1]
