"""Every ```python block of README.md runs as written: each block, read from the README itself (a new block is tested
without touching this file), runs in a fresh process in a folder that holds tiny stand-ins of what the blocks read.

The only changes to a block's code are the Hub ids of `HUB_STAND_INS`, replaced by tiny local folders; a block that
uses one says "needs the Hub" in a comment. Files and folders the blocks open by a relative path (`LOCAL_STAND_INS`)
are written by this test at that path. The README says both, in one paragraph before its first Python block.
"""

import csv
import json
import re
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.data.shapes import BACKGROUND, SHAPE_NAMES

from .data_trees import write_coco_toco_tree, write_voc_tree
from .utils import PYTHON, markdown_python_blocks, save_tiny_checkpoint, subprocess_env


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
HUB_MARK = "needs the hub"

# Hub id in a block -> the tiny local folder (under the test's hub/ folder) that replaces it.
HUB_STAND_INS = {
    "google/vit-base-patch16-384": "vit-base-patch16-384",  # a 2-layer, 32-wide ViTForImageClassification
    "facebook/dinov2-base": "dinov2-base",  # a 2-layer, 32-wide Dinov2Model and its preprocessor_config.json
    "user/dataset": "dataset",  # a parquet folder with `img` and `tags` columns
}
# Path a block reads (relative to its working folder) -> what the test writes there.
LOCAL_STAND_INS = {
    "outputs/demo/stage1": "a tiny CPF-CTE checkpoint on the demo's classes (inference size 32)",
    "2007_000032.jpg": "a generated 48x64 image",
    "photo.jpg": "a generated 48x64 image",
    "data/VOCdevkit": "a VOC-layout tree of 4 generated images (train_aug, val)",
    "data/coco2014": "a ToCo-layout COCO tree of 5 generated images",
    "my_photos": "the README's own photos example: tags.csv, photo_01.jpg, holiday/beach 2.jpg",
    "outputs/demo/export": "my_photos labelled with outputs/demo/stage1, then `cpfcte-hf export --format datasets`",
}
DEMO_CLASSES = [BACKGROUND, *SHAPE_NAMES[:5]]


BLOCKS = markdown_python_blocks(README.read_text(encoding="utf-8"))


def _generated_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    array[12:36, 16:48] = (220, 40, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_my_photos(root: Path) -> None:
    rows = [("photo_01.jpg", "disc;ring"), ("holiday/beach 2.jpg", "Cross")]
    for seed, (name, _) in enumerate(rows):
        _generated_image(root / name, seed)
    with open(root / "tags.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file_name", "tags"), *rows])


def _write_export(work: Path) -> None:
    from cpfcte_hf.cli.main import run_command

    labels = ["--model", str(work / "outputs/demo/stage1"), "--dataset", "tagged"]
    labels += ["--data_root", str(work / "my_photos"), "--output_dir", str(work / "labels")]
    labels += ["--crf_workers", "0", "--no_progress", "--no_report_html"]
    assert run_command("label", labels) == 0
    export = ["--labels", str(work / "labels"), "--output_dir", str(work / "outputs/demo/export"), "--no_progress"]
    assert run_command("export", export) == 0


def _write_hub_stand_ins(hub: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    ViTForImageClassification(ViTConfig(**tiny, intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(
        hub / HUB_STAND_INS["google/vit-base-patch16-384"]
    )
    dinov2 = hub / HUB_STAND_INS["facebook/dinov2-base"]
    Dinov2Model(Dinov2Config(**tiny, mlp_ratio=2, image_size=28, patch_size=14)).save_pretrained(dinov2)
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (dinov2 / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "BitImageProcessor", **imagenet})
    )
    images = []
    for seed in range(3):
        _generated_image(hub / f"image_{seed}.png", seed)
        images.append(str(hub / f"image_{seed}.png"))
    features = datasets.Features({"img": datasets.Image(), "tags": datasets.List(datasets.Value("string"))})
    table = {"img": images, "tags": [["disc"], ["disc", "ring"], ["ring"]]}
    (hub / "dataset").mkdir()
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(hub / "dataset" / "train.parquet"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The folder the blocks run in, with `LOCAL_STAND_INS`; the Hub stand-ins in a folder next to it."""
    root = tmp_path_factory.mktemp("readme")
    work, hub = root / "work", root / "hub"
    save_tiny_checkpoint(
        work / "outputs/demo/stage1", num_labels=len(DEMO_CLASSES), id2label=dict(enumerate(DEMO_CLASSES)),
        inference_size=32, classifier_init_std=50.0,
    )  # fmt: skip
    _generated_image(work / "2007_000032.jpg", 0)
    _generated_image(work / "photo.jpg", 1)
    write_voc_tree(work / "data", splits={"train_aug": 2, "val": 2})
    write_coco_toco_tree(work / "data" / "coco2014")
    _write_my_photos(work / "my_photos")
    _write_export(work)
    hub.mkdir()
    _write_hub_stand_ins(hub)
    assert all((work / path).exists() for path in LOCAL_STAND_INS)
    return work, hub


def test_the_readme_says_what_the_test_changes_and_marks_every_block_that_needs_the_hub():
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) >= 6
    intro = text[: text.index("```python")].rsplit("\n\n", 2)[-2]  # the paragraph before the first block
    assert "tests/test_readme_examples.py" in intro and "needs the Hub" in intro
    for path in LOCAL_STAND_INS:
        assert f"`{path}" in intro, path
    used = set()
    for line, code in BLOCKS:
        hub_ids = {hub_id for hub_id in HUB_STAND_INS if f'"{hub_id}"' in code}
        used |= hub_ids
        assert bool(hub_ids) == (HUB_MARK in code.lower()), f"README.md:{line}: Hub ids {hub_ids}, mark missing/extra"
    assert used == set(HUB_STAND_INS)  # no stand-in for a Hub id the README no longer uses


@pytest.mark.slow
@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs_as_written(workdir, line, code):
    work, hub = workdir
    for hub_id, folder in HUB_STAND_INS.items():
        code = code.replace(f'"{hub_id}"', json.dumps(str(hub / folder)))
    unknown = [name for name in re.findall(r'"([\w.-]+/[\w.-]+)"', code) if not (work / name).exists()]
    assert not unknown, f"README.md:{line}: {unknown} look like Hub ids; give them a stand-in in HUB_STAND_INS"
    # The user's caches, as for a reader running the block (the 2,000 shapes images of `load_shapes` are built once).
    result = subprocess.run(
        [PYTHON, "-c", code], cwd=work, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README.md:{line} failed:\n{code}\n{result.stderr[-4000:]}"
