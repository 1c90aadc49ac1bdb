"""`cpfcte-hf demo` (what `make demo` runs), shrunk to seconds: every step of both stages runs and leaves what the
README promises; a rerun skips what is done and refuses outputs made with other settings."""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cpfcte_hf.utils.precision import cpu_bf16_flags
from tests.utils import accelerate_launch, subprocess_env


REPO = Path(__file__).resolve().parents[1]

# The demo preset shrunk: 32-px images, a 2-layer 32-wide ViT, 4 steps (of the demo's 12 epochs); an 8-wide
# DeepLab-v2, 3 steps. Settings off every default (inference size 48, pseudo-labels at 64 px with two scales and the
# flip, stage-2 test scales 1.0 and 0.5), so that the card's statements can be checked against the run's records.
TINY_PRESET = """\
base: demo
dataset_option: [num_train=24, num_val=6, image_size=32]
image_size: 32
inference_size: 48
hidden_size: 32
num_hidden_layers: 2
num_attention_heads: 2
intermediate_size: 64
lstm_hidden_size: 8
et_crop_size: 8
et_scale_size: 16
max_steps: 4
warmup_steps: 1
per_device_train_batch_size: 8
logging_steps: 1
report_to: none
label:
  size: 64
  scales: [1.0, 1.5]
  flip: true
train_deeplab:
  resnet_hidden_sizes: [8, 8, 16, 16]
  resnet_embedding_size: 8
  image_size: 33
  crop_size: 33
  max_steps: 3
  per_device_train_batch_size: 4
  test_scales: [1.0, 0.5]
  report_to: none
"""
STEPS = ["data", "stage1", "pseudo_labels", "stage2", "eval_stage1_tagged", "eval_stage1_untagged", "eval_stage2"]


def demo(tmp_path, demo_dir, *extra):
    preset = tmp_path / "tiny_demo.yaml"
    preset.write_text(TINY_PRESET)
    command = [
        sys.executable, "-m", "cpfcte_hf", "demo", "--config", str(preset), "--demo_dir", str(demo_dir),
        "--crf_workers", "0", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    demo_dir = tmp_path / "out"
    result = demo(tmp_path, demo_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, demo_dir, result


def test_demo_prints_the_table_and_writes_results(demo_run):
    _, demo_dir, result = demo_run
    results = json.loads((demo_dir / "demo_results.json").read_text())
    keys = (
        "pseudo_label_miou_bpm",
        "pseudo_label_miou_crf",
        "stage1_untagged_miou",
        "stage2_miou",
        "stage2_miou_ms_crf",
    )
    for key in keys:
        assert 0.0 <= results[key] <= 1.0, key
    names = list(results["per_class_iou"])
    assert names[0] == "background" and len(names) == 6  # 5 procedural classes + background
    assert set(results["per_class_iou"]["disc"]) == {"BPM", "CRF", "S1 untagged", "S2", "S2 MS+CRF"}
    flags = cpu_bf16_flags()
    precision = (
        f"Precision: bf16 autocast on the CPU ({', '.join(flags)})" if flags else "Precision: float32 on the CPU"
    )
    assert result.stdout.count(precision) == (2 if not torch.cuda.is_available() else 1), result.stdout[-3000:]
    assert list(results["seconds"]) == [*STEPS, "hub"]
    assert all(results["steps"][step] == "ran" and results["seconds"][step] > 0 for step in STEPS)
    assert results["failed_images"] == 0 and results["num_val_images"] == 6
    summary = json.loads((demo_dir / "run_summary.json").read_text())
    assert summary["mean_iou"]["stage2"] == results["stage2_miou"]
    # Which model stage 2 trained: the demo's DeepLab-v2 from random weights, named in the summary and the table.
    deeplab = {"model_type": "deeplab_v2", "checkpoint": None, "name": "DeepLab-v2 (random init)"}
    assert summary["stage2_model"] == results["stage2_model"] == deeplab
    assert "stage 2: DeepLab-v2 (random init)" in result.stdout
    # Every step records its settings and their fingerprint next to its folder; stage 1 got the demo preset's.
    record = json.loads((demo_dir / "stage1.step.json").read_text())
    assert record["status"] == "complete" and len(record["fingerprint"]) == 64
    assert record["settings"]["ModelArguments"]["context_fusion_residual"] is True
    assert record["settings"]["CPFCTETrainingArguments"]["eval_strategy"] == "no"
    stage2 = json.loads((demo_dir / "stage2.step.json").read_text())["settings"]
    assert stage2["DeepLabModelArguments"]["resnet_layer_type"] == "basic"  # from deeplab_shapes, via the section
    assert stage2["DeepLabV2TrainingArguments"]["max_steps"] == 3
    # The console table carries the same numbers.
    assert "CPF-CTE demo" in result.stdout
    for key in keys:
        assert f"{100 * results[key]:.1f}" in result.stdout


def test_demo_leaves_masks_reports_and_pictures(demo_run):
    _, demo_dir, _ = demo_run
    val_ids = (demo_dir / "data" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    train_ids = (demo_dir / "data" / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(val_ids) == 6 and len(train_ids) == 24
    for folder, ids in (("eval/stage1_tagged", val_ids), ("pseudo_labels", train_ids)):
        for kind in ("bpm", "crf"):
            for item in ids:
                mask = Image.open(demo_dir / folder / kind / f"{item}.png")
                assert mask.mode == "P" and mask.size == (32, 32)
                assert np.asarray(mask).max() <= 5
    report = demo_dir / "eval" / "stage1_tagged" / "report"
    assert set(json.loads((report / "metrics.json").read_text())["predictions"]) == {"BPM", "CRF"}
    assert (report / "per_class_iou.png").stat().st_size > 0
    overlays = sorted((report / "overlays").glob("*.png"))
    assert overlays and Image.open(overlays[0]).width > 3 * 32  # image | ground truth | BPM | CRF panels
    stage2 = demo_dir / "stage2" / "predictions" / "val" / "report"
    assert set(json.loads((stage2 / "metrics.json").read_text())["predictions"]) == {"MS", "MS+CRF"}
    single = demo_dir / "eval" / "stage2" / "predictions" / "val" / "report" / "metrics.json"
    assert set(json.loads(single.read_text())["predictions"]) == {"MS"}
    assert (stage2 / "per_class_iou.png").stat().st_size > 0


def test_both_checkpoints_load_in_the_pipeline(demo_run):
    from transformers import pipeline

    import cpfcte_hf  # noqa: F401  (registers the Auto classes)

    _, demo_dir, _ = demo_run
    image = Image.open(next((demo_dir / "data" / "JPEGImages").iterdir())).convert("RGB")
    for model in ("stage1", "stage2"):
        segmenter = pipeline("image-segmentation", model=str(demo_dir / model))
        segments = segmenter(image)
        assert segments and {"score", "label", "mask"} <= set(segments[0])
        assert {segment["label"] for segment in segments} <= set(segmenter.model.config.id2label.values())
        assert segments[0]["mask"].size == image.size


def test_a_rerun_skips_done_steps_and_refuses_other_settings(demo_run):
    tmp_path, demo_dir, _ = demo_run
    before = (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns
    result = demo(tmp_path, demo_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in STEPS:
        assert f"[run] {step}: done before with the same settings, skipped" in result.stdout
    assert (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns == before

    # Another stage-2 learning rate: the steps before it stand, stage 2 is refused with the difference named.
    preset = tmp_path / "other_lr.yaml"
    preset.write_text(f"base: {tmp_path / 'tiny_demo.yaml'}\ntrain_deeplab:\n  learning_rate: 0.5\n")
    command = [sys.executable, "-m", "cpfcte_hf", "run", "--config", str(preset), "--output_dir", str(demo_dir),
               "--crf_workers", "0", "--steps", "data", "stage1", "stage2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "step stage2" in result.stderr and "learning_rate: 0.001 -> 0.5" in result.stderr
    assert "[run] stage1: done before with the same settings, skipped" in result.stdout
    assert (demo_dir / "stage2" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_the_demo_on_two_processes_splits_every_step_prints_once_and_ships_one_model(tmp_path):
    """`accelerate launch -m cpfcte_hf demo` (= `run` plus the demo's table) on 2 CPU processes (gloo) without
    `use_cpu` in the stage-2 recipe: each training is one data-parallel run, every image is labelled once, the data
    and Hub steps run once, the summary and the table are printed once, and stage 2 is scored with the weights it
    saved (each rank's BatchNorm statistics differ after training)."""
    preset = tmp_path / "tiny_demo.yaml"
    preset.write_text(TINY_PRESET)
    out = tmp_path / "out"
    command = [
        *accelerate_launch(2), "-m", "cpfcte_hf", "demo", "--config", str(preset), "--output_dir", str(out),
        "--crf_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    assert all(entry["status"] == "ran" for entry in summary["steps"].values()), summary["steps"]
    for step in STEPS + ["hub"]:  # one log line per step, not one per process
        assert result.stdout.count(f"=== [run] {step}: ") == 2, step  # its start and its end
    assert result.stdout.count("Dry run: nothing pushed") == 1
    # The run's summary, the demo's table and its file: once, by the main process.
    assert result.stdout.count("mIoU % (background included)") == 1, result.stdout[-3000:]
    assert result.stdout.count("CPF-CTE demo on held-out procedural images") == 1
    assert json.loads((out / "demo_results.json").read_text())["stage2_miou"] is not None
    # 24 training images. Stage 1: 4 steps of 8 per process, 2 steps an epoch (one process alone: 3 steps, 1.33
    # epochs). Stage 2: 3 steps of 4 per process, one epoch (one process alone: half an epoch).
    for stage, epochs in (("stage1", 2.0), ("stage2", 1.0)):
        state = json.loads((out / stage / "trainer_state.json").read_text())
        assert state["epoch"] == pytest.approx(epochs), stage
    assert len(list((out / "pseudo_labels" / "crf").glob("*.png"))) == 24
    assert len(list((out / "eval" / "stage2" / "predictions" / "val" / "ms").glob("*.png"))) == 6
    report = json.loads((out / "pseudo_labels" / "summary.json").read_text())
    assert report["written"] == 24 and report["failed"] == 0 and report["written_per_process"] == [12, 12]
    assert "6 image(s) of val: 6 written, 0 already done, 0 failed" in result.stdout  # stage 2, both processes


def card_sections(text: str) -> dict[str, str]:
    """`{heading: text}` of a card's `## ` sections (the front matter left out)."""
    body = text.split("\n---\n", 1)[1]
    return dict(chunk.partition("\n")[::2] for chunk in body.split("\n## ")[1:])


def section(sections: dict[str, str], start: str) -> str:
    return next(content for title, content in sections.items() if title.startswith(start))


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row of `text` (header rows included)."""
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith("| ")]  # fmt: skip


# A path of this machine: absolute POSIX or Windows, at the start of a string or after a space, "=", quote or "(".
ABSOLUTE_PATH = re.compile(r"(?:^|[\s=(`\"'])(?:/|[A-Za-z]:\\)[\w.~-]")


@pytest.fixture(scope="module")
def card(demo_run):
    """The Hub folder of the tiny demo run, whose settings are all off the defaults (inference size 48, pseudo-labels at
    64 px, scales 1.0 + 1.5 with the flip, max_steps 4 of 12 epochs, an 8-wide DeepLab-v2 of 3 steps tested at 1.0 +
    0.5): its card's sections, and the run's records (`read("stage1", "config.json")`)."""
    _, demo_dir, _ = demo_run
    hub = demo_dir / "hub"
    text = (hub / "README.md").read_text()

    def read(*parts):
        return json.loads(demo_dir.joinpath(*parts).read_text())

    return SimpleNamespace(dir=demo_dir, hub=hub, text=text, sections=card_sections(text), read=read)


def test_the_card_names_the_runs_dataset_classes_inference_size_and_what_score_holds(card):
    text, sections, read = card.text, card.sections, card.read
    config = read("stage1", "config.json")
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    assert text.split("\n---\n", 1)[1].lstrip().startswith("# CPF-CTE (ViT) on procedural shapes")
    assert ", ".join(f"`{name}`" for name in names) in sections["Model"] and names[0] == "background"
    # The pipeline's default size is the checkpoint's; `score` is an image-level score with the package.
    assert config["inference_size"] == 48
    size = f"{config['inference_size']} (this checkpoint's `config.inference_size`)"
    assert dict(table_rows(sections["Model"]))["Pseudo-label inference size (pipeline default)"] == size
    assert f"# default size: {size}" in sections["Usage"] and "960" not in text
    assert '"score": None' not in text and '"score": the class\'s image-level score' in sections["Usage"]


def test_the_card_shows_each_pseudo_labelling_run_with_its_recorded_settings(card):
    sections, read, hub = card.sections, card.read, card.hub
    labels = {(row[0], row[1]): row[2:] for row in table_rows(section(sections, "How the pseudo-labels"))[1:]}
    copies = {}
    for path in hub.glob("results/*/metrics.json"):
        copy = json.loads(path.read_text())
        if copy["stage"] == "pseudo_labels":
            copies[(copy["split"], copy["settings"]["use_image_labels"])] = (path.relative_to(hub).as_posix(), copy)
    assert len(labels) == len(copies) == 3
    for folder in ("pseudo_labels", "eval/stage1_tagged", "eval/stage1_untagged"):
        original = read(*folder.split("/"), "report", "metrics.json")
        settings = original["settings"]
        name, copy = copies[(original["split"], settings["use_image_labels"])]
        assert copy["settings"] == settings and copy["predictions"]["BPM"] == original["predictions"]["BPM"] | {
            "directory": "…/bpm"
        }
        assert (settings["size"], settings["scales"], settings["flip"]) == (64, [1.0, 1.5], True)
        size_cell, scales, flip, tags, crf = labels[(original["split"], name)]
        assert size_cell.startswith(f"{settings['size']}×{settings['size']} ({settings['size'] // 8}×")
        assert (scales, flip, tags[:3]) == ("1.0, 1.5", "yes", "yes" if settings["use_image_labels"] else "no ")
        iterations = f"{settings['crf_config']['iterations']} iterations"
        assert crf.startswith(iterations) if settings["crf"] else crf == "none"


def test_the_card_shows_the_stage_one_training_as_it_ran(card):
    """max_steps 4 stopped the 12 epochs of the preset in epoch 2: the card says what ran, not the recipe."""
    sections, read = card.sections, card.read
    run_config, state = read("stage1", "run_config.json"), read("stage1", "trainer_state.json")
    arguments = run_config["CPFCTETrainingArguments"]
    assert (arguments["max_steps"], arguments["num_train_epochs"], state["global_step"]) == (4, 12, 4)
    training = dict(table_rows(sections["Training"]))
    assert training["Length"] == (
        f"{state['global_step']} optimizer steps = {state['epoch']:.2f} epochs; limit: max_steps 4, which overrides "
        "num_train_epochs 12"
    )
    assert "Epochs" not in training and "The paper's recipe" not in sections["Training"]
    assert training["Data root"] == "…/data" and run_config["DataArguments"]["data_root"] == str(card.dir / "data")
    assert training["Equivariance loss (ViT-PCM's L_ET)"] == f"weight {arguments['equivariance_loss_weight']:g}"
    # The demo's `bf16: auto`: bf16 where this processor has bfloat16 instructions, as the run recorded and printed.
    assert arguments["bf16"] is bool(cpu_bf16_flags()) and arguments["use_cpu"] is True
    assert training["Mixed precision"] == ("bf16" if cpu_bf16_flags() else "off")
    data = run_config["DataArguments"]
    for key, words in (("aug_grayscale_p", "grayscale"), ("aug_hflip_p", "left-right flip"), ("aug_hue", "hue")):
        assert (words in training["Augmentation"]) == bool(data[key]), key


def test_the_card_shows_the_small_deeplab_this_run_trained_and_tested(card):
    """Architecture, training and test scales of stage 2 from its records; nothing of the VOC recipe."""
    sections, read, text = card.sections, card.read, card.text
    deeplab, run_args = read("stage2", "config.json"), read("stage2", "run_args.json")
    state2 = read("stage2", "trainer_state.json")
    backbone, train2 = deeplab["backbone_config"], run_args["DeepLabV2TrainingArguments"]
    stage2 = dict(row for row in table_rows(sections["Stage 2"]) if len(row) == 2)
    assert stage2["Architecture"].startswith(
        f"ResNet with {backbone['layer_type']} blocks ({'/'.join(map(str, backbone['depths']))} per stage, widths "
        f"{'/'.join(map(str, backbone['hidden_sizes']))}, stem {backbone['embedding_size']}"
    ) and stage2["Architecture"].endswith(f"ASPP rates {'/'.join(map(str, deeplab['atrous_rates']))}")
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation

    parameters = DeepLabV2ForSemanticSegmentation.from_pretrained(card.dir / "stage2").num_parameters()
    assert stage2["Parameters"] == f"{parameters:,}"
    assert stage2["Crops"].startswith(f"{train2['crop_size']} px, random scale {train2['min_scale']:g}–")
    assert stage2["Optimizer"].startswith(f"{train2['optim']}, lr {train2['learning_rate']:g}")
    assert stage2["Length"].startswith(f"{state2['global_step']} optimizer steps = {state2['epoch']:.2f} epochs")
    assert state2["global_step"] == train2["max_steps"] == 3
    if not torch.cuda.is_available():  # the demo's stage 2 trains where a GPU is; here on the CPU, `bf16: auto`
        assert train2["bf16"] is bool(cpu_bf16_flags()) and stage2["Optimizer"].startswith("adamw_torch_fused")
        assert stage2["Mixed precision"] == ("bf16" if cpu_bf16_flags() else "off")
    tested = {row[0]: row[2] for row in table_rows(sections["Stage 2"]) if len(row) == 3 and row[0] != "Results file"}
    for folder in ("stage2", "eval/stage2"):
        settings = read(*folder.split("/"), "predictions", "val", "report", "metrics.json")["settings"]
        how = f"scales {', '.join(map(str, settings['scales']))} fused by max"
        assert how + (", then the dense CRF" if settings["crf"] else ", no CRF") in tested.values()
    for forbidden in ("ResNet-101", "321", "20k", "2.5e-4", "Epochs | 12"):
        assert forbidden not in text, forbidden


def test_no_file_of_the_hub_folder_names_a_path_of_this_machine(card):
    roots = {str(card.dir), str(card.dir.parent), str(REPO), str(Path.home())}
    for path in card.hub.rglob("*"):
        if path.suffix in (".json", ".md", ".csv", ".py", ".txt"):
            content = path.read_text(encoding="utf-8")
            assert not [root for root in roots if root in content], path
            assert not ABSOLUTE_PATH.search(content.replace("\\n", "\n")), (path, ABSOLUTE_PATH.search(content))


def test_the_cards_usage_examples_run_as_written(card, tmp_path):
    """The card's Python blocks, with the folder for its repo id and a generated image for its example file: the
    first with transformers only (the package cannot be imported), the second with the package."""
    from tests.utils import BLOCK_PACKAGE_IMPORT, markdown_python_blocks

    blocks = [code for _, code in markdown_python_blocks(card.text)]
    assert len(blocks) == 2 and "trust_remote_code=True" in blocks[0] and "import cpfcte_hf" in blocks[1]
    repo_id = card.read("run_summary.json")["arguments"]["repo_id"]
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
        tmp_path / "shapes.png"
    )
    for prefix, code in zip((BLOCK_PACKAGE_IMPORT, ""), blocks):
        assert f'"{repo_id}"' in code
        code = prefix + code.replace(f'"{repo_id}"', repr(str(card.hub)))
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, code + result.stderr[-3000:]
