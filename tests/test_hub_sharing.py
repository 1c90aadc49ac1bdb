"""Model cards and Hub sharing: scripts/push_to_hub.py --dry-run on a tiny checkpoint trained for real, the card's
metadata and numbers against the results files the project's scripts wrote, remote-code loading of the folder
without the package, and clear errors (bad inputs, offline, no token, Hub unreachable)."""

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, constants
from PIL import Image

from cpfcte_hf import VOC_CLASSES, CPFCTEForWeaklySupervisedSegmentation
from cpfcte_hf.data import COCO_CLASSES, ShapesConfig, write_shapes_voc
from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation, deeplab_image_processor
from cpfcte_hf.evaluation.report import run_evaluation
from cpfcte_hf.evaluation.results import read_results
from cpfcte_hf.hub.card import available_cards, describe_dataset, run_length
from cpfcte_hf.hub.folder import build_hub_folder, push_to_hub
from cpfcte_hf.hub.measurements import CARD_TEMPLATE, MEASUREMENTS, NOT_MEASURED, HubPushError, HubSharingError
from cpfcte_hf.hub.public import public_text, public_value
from cpfcte_hf.prediction.config import PseudoLabelConfig
from cpfcte_hf.prediction.pseudo_labels import run_pseudo_labeling
from cpfcte_hf.stage1.train import DataArguments, ModelArguments, run_training
from cpfcte_hf.stage1.trainer import CPFCTETrainingArguments

from .data_trees import write_voc_tree
from .utils import BLOCK_PACKAGE_IMPORT, PYTHON, save_tiny_checkpoint, subprocess_env


REPO = Path(__file__).resolve().parents[1]
PUSH = str(REPO / "scripts" / "push_to_hub.py")
PAPER_HEADING = "## Paper's reported results (not reproduced by this checkpoint)"
PAPER_NUMBERS = {"voc": ("67.1", "70.8", "69.5"), "coco": ("41.3", "45.4")}
SOURCE_FILES = {"configuration_cpfcte.py", "modeling_cpfcte.py", "image_processing_cpfcte.py"}


def front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def model_index_values(metadata: dict) -> dict[str, tuple[float, str | None]]:
    """{metric name: (value, split)} of a card's model-index."""
    found = {}
    for model in metadata.get("model-index") or []:
        for result in model["results"]:
            for metric in result["metrics"]:
                assert metric["name"] not in found
                found[metric["name"]] = (metric["value"], result["dataset"].get("split"))
    return found


def assert_paper_numbers_only_in_their_section(text: str, card: str) -> None:
    start = text.index(PAPER_HEADING)
    end = text.index("\n## ", start + 1)
    for number in PAPER_NUMBERS[card]:
        assert text.count(number) == text[start:end].count(number) >= 1, number


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CPF-CTE trained for real on a tiny VOC-layout tree by `run_training` (scripts/train.py), then
    pseudo-labelled with CRF and scored by `run_pseudo_labeling` (scripts/pseudo_label.py): the checkpoint and the
    results files those write (eval_results.json, run_config.json, report/metrics.json)."""
    root = tmp_path_factory.mktemp("hub_sharing")
    tree = write_voc_tree(root / "data", splits={"train_aug": 8, "val": 20})
    # Every class has ground truth in val, so that every per-class IoU is defined.
    assert {c for i in tree["ids"]["val"] for c in tree["labels"][i]} == set(range(21))
    cache = str(root / "cache")
    run_training(
        ModelArguments(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        ),
        DataArguments(
            dataset="voc", data_root=tree["root"], train_split="train_aug", eval_split="val", cache_dir=cache
        ),
        CPFCTETrainingArguments(
            output_dir=str(root / "run"), num_train_epochs=1, stage1_epochs=0, trainable_encoder_blocks=-1,
            learning_rate=1e-3, per_device_train_batch_size=4, per_device_eval_batch_size=4, eval_strategy="no",
            save_strategy="no", load_best_model_at_end=False, report_to="none", dataloader_num_workers=0,
            use_cpu=True, eval_pictures=0,
        ),
    )  # fmt: skip
    run_pseudo_labeling(
        str(root / "run"),
        str(root / "pseudo"),
        dataset_name="voc",
        data_root=tree["root"],
        split="val",
        config=PseudoLabelConfig(size=32, crf_workers=0, num_overlays=0, progress=False),
        dataset_kwargs={"cache_dir": cache},
    )
    return SimpleNamespace(root=root, run=root / "run", pseudo=root / "pseudo")


@pytest.fixture(scope="module")
def dry_run(trained):
    """`scripts/push_to_hub.py --dry-run` on the trained checkpoint with its pseudo-label report."""
    out = trained.root / "hub"
    command = [
        PYTHON, PUSH, "--model", str(trained.run), "--repo-id", "someone/cpf-cte-voc-tiny",
        "--results", str(trained.pseudo), "--dry-run", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "card: voc" in result.stdout and "Dry run: nothing pushed" in result.stdout
    return out


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    """An untrained tiny checkpoint with the 21 VOC classes and no results files."""
    directory = tmp_path_factory.mktemp("tiny_voc") / "model"
    save_tiny_checkpoint(directory, num_labels=21, id2label=dict(enumerate(VOC_CLASSES)))
    return directory


@pytest.mark.slow
def test_dry_run_folder_holds_the_model_its_code_and_the_results(dry_run, trained):
    files = {str(p.relative_to(dry_run)) for p in dry_run.rglob("*") if p.is_file()}
    expected = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "results.json"}
    assert expected | SOURCE_FILES <= files
    assert {"results/training/eval_results.json", "results/pseudo_labels/metrics.json"} <= files
    assert "training_args.bin" not in files and not any(name.startswith("checkpoint-") for name in files)
    auto_map = json.loads((dry_run / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_cpfcte.CPFCTEForWeaklySupervisedSegmentation"
    assert auto_map["AutoImageProcessor"] == "image_processing_cpfcte.CPFCTEImageProcessor"
    for name in SOURCE_FILES:
        assert (dry_run / name).read_text() == (REPO / "cpfcte_hf" / "models" / "cpfcte" / name).read_text()
    # The copied results files are the ones the scripts wrote, local paths shortened, and results.json says so.
    copied = json.loads((dry_run / "results/pseudo_labels/metrics.json").read_text())
    original = json.loads((trained.pseudo / "report" / "metrics.json").read_text())
    assert copied == public_value(original) and copied["predictions"] == original["predictions"] | {
        name: {**entry, "directory": f"…/{name.lower()}"} for name, entry in original["predictions"].items()
    }
    assert original["data_root"].startswith("/") and copied["data_root"] == "…/data"
    record = json.loads((dry_run / "results.json").read_text())
    assert set(record["measurements"]) == {"training_eval_miou", "pseudo_label_bpm_miou", "pseudo_label_crf_miou"}
    assert set(record["not_measured"]) == {"deeplab_ms_miou", "deeplab_ms_crf_miou"}
    import hashlib

    for entry in record["measurements"].values():
        assert hashlib.sha256((dry_run / entry["source_file"]).read_bytes()).hexdigest() == entry["source_sha256"]


@pytest.mark.slow
def test_card_shows_exactly_the_measured_values(dry_run, trained):
    text = (dry_run / "README.md").read_text()
    metadata, body = front_matter(text)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["license"] == "apache-2.0"
    assert {"weakly-supervised-semantic-segmentation", "vit", "cpf-cte"} <= set(metadata["tags"])
    assert "base_model" not in metadata  # this run trained its ViT from scratch (run_config.json says so)

    evaluation = json.loads((trained.run / "eval_results.json").read_text())
    report = json.loads((trained.pseudo / "report" / "metrics.json").read_text())
    expected = {
        "Validation pseudo-label mIoU (trainer, no CRF)": evaluation["eval_mean_iou"],
        "Pseudo-label mIoU without CRF (BPM)": report["predictions"]["BPM"]["mean_iou"],
        "Pseudo-label mIoU with CRF": report["predictions"]["CRF"]["mean_iou"],
    }
    values = model_index_values(metadata)
    assert set(values) == set(expected)  # nothing DeepLab: it was not measured
    for name, measured in expected.items():
        assert values[name] == (round(100 * measured, 2), "val"), name
    assert len(ModelCard(text).data.eval_results) == 3  # the Hub's own parser agrees

    rows = {line.split(" | ")[0].lstrip("| "): line for line in body.splitlines() if line.startswith("| ")}
    assert f"| {100 * report['predictions']['CRF']['mean_iou']:.2f} |" in rows[MEASUREMENTS["pseudo_label_crf_miou"]]
    for key in ("deeplab_ms_miou", "deeplab_ms_crf_miou"):
        assert f"| {NOT_MEASURED} |" in rows[MEASUREMENTS[key]]
    background = report["predictions"]["CRF"]["per_class"][0]["iou"]
    assert rows["background"].startswith(f"| background | {100 * background:.2f} |")  # first column: CRF
    assert "${" not in text and "someone/cpf-cte-voc-tiny" in body
    assert "| Encoder initialisation | from scratch (random ViT) |" in body
    assert_paper_numbers_only_in_their_section(text, "voc")


@pytest.mark.slow
def test_dry_run_folder_loads_as_remote_code_without_the_package(dry_run, trained, tmp_path):
    model = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(trained.run).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values).logits
    torch.save(pixel_values, tmp_path / "input.pt")
    code = (
        BLOCK_PACKAGE_IMPORT
        + f"""
import numpy as np, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
folder = {str(dry_run)!r}
model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)).__module__.startswith("transformers_modules")
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / "input.pt")!r})).logits, {str(tmp_path / "output.pt")!r})
segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
segments = segmenter(Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)))
union = sum((np.asarray(s["mask"]) > 0).astype(int) for s in segments)
assert segments and union.shape == (30, 44) and (union == 1).all()
assert {{s["label"] for s in segments}} <= set(model.config.id2label.values())
print("REMOTE_OK", len(segments))
"""
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout
    assert torch.equal(torch.load(tmp_path / "output.pt"), expected)


def test_card_without_results_says_not_measured_everywhere(tiny_voc, tmp_path):
    folder = build_hub_folder(tiny_voc, tmp_path / "hub", "someone/untrained")
    assert folder.card == "voc" and folder.measurements == {} and folder.not_measured == list(MEASUREMENTS)
    text = (tmp_path / "hub" / "README.md").read_text()
    metadata, body = front_matter(text)
    assert "model-index" not in metadata and not ModelCard(text).data.eval_results
    assert "base_model" not in metadata  # how the encoder was initialised is not recorded
    for description in MEASUREMENTS.values():
        line = next(line for line in body.splitlines() if line.startswith(f"| {description} |"))
        assert f"| {NOT_MEASURED} |" in line
    assert f"Per-class IoU: {NOT_MEASURED}." in body and "training run was not recorded" in body
    assert json.loads((tmp_path / "hub" / "results.json").read_text())["measurements"] == {}
    assert_paper_numbers_only_in_their_section(text, "voc")


def test_coco_card_renders_for_an_81_class_checkpoint(tmp_path):
    save_tiny_checkpoint(tmp_path / "model", num_labels=81, id2label=dict(enumerate(COCO_CLASSES)))
    folder = build_hub_folder(tmp_path / "model", tmp_path / "hub", "someone/coco-tiny")
    assert folder.card == "coco" and set(available_cards()) == {"voc", "coco"}
    text = (tmp_path / "hub" / "README.md").read_text()
    metadata, body = front_matter(text)
    assert metadata["pipeline_tag"] == "image-segmentation" and "coco" in metadata["tags"]
    assert "model-index" not in metadata and body.lstrip().startswith("# CPF-CTE (ViT) on MS COCO 2014")
    assert_paper_numbers_only_in_their_section(text, "coco")


def _copy(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_weights", "no weights in it"),
        ("no_config", "no config.json"),
        ("no_processor", "no preprocessor_config.json"),
        ("unknown_card", "Unknown model card 'ade20k'. Available cards: coco, voc"),
        ("card_for_other_classes", "is for 81-class models; this checkpoint has 21 classes"),
        ("unknown_results_file", "unknown results file"),
        ("empty_results_dir", "no results in this directory"),
        ("results_of_other_classes", "these results are not this model's"),
        ("training_results_without_miou", "has no `eval_mean_iou`"),
        ("typed_number_in_template", "has the literal value 70.8"),
        ("bad_repo_id", "expected USER/NAME"),
        ("output_not_empty", "exists and is not empty"),
    ],
)
def test_bad_inputs_get_a_clear_error_naming_them(tiny_voc, tmp_path, case, message):
    model, out, card, results, repo_id = tiny_voc, tmp_path / "hub", "auto", [], "someone/model"
    if case == "no_weights":
        model = _copy(tiny_voc, tmp_path / "model")
        (model / "model.safetensors").unlink()
    elif case == "no_config":
        model = _copy(tiny_voc, tmp_path / "model")
        (model / "config.json").unlink()
    elif case == "no_processor":
        model = _copy(tiny_voc, tmp_path / "model")
        (model / "preprocessor_config.json").unlink()
    elif case == "unknown_card":
        card = "ade20k"
    elif case == "card_for_other_classes":
        card = "coco"
    elif case == "unknown_results_file":
        results = [tmp_path / "scores.json"]
        results[0].write_text("{}")
    elif case == "empty_results_dir":
        results = [tmp_path / "nothing"]
        results[0].mkdir()
    elif case == "results_of_other_classes":
        (tmp_path / "report").mkdir()
        report = {"class_names": ["background", "cat"], "predictions": {"CRF": {"mean_iou": 0.5, "per_class": []}}}
        (tmp_path / "report" / "metrics.json").write_text(json.dumps(report))
        results = [tmp_path / "report"]
    elif case == "training_results_without_miou":
        results = [tmp_path / "eval_results.json"]
        results[0].write_text(json.dumps({"eval_loss": 0.3}))
    elif case == "typed_number_in_template":
        template = CARD_TEMPLATE.read_text()
        card = str(tmp_path / "README.md")
        typed = "model-index:\n- name: m\n  results:\n  - task: {type: image-segmentation}\n"
        typed += "    dataset: {type: voc, name: PASCAL VOC 2012}\n"
        typed += "    metrics:\n    - {type: mean_iou, name: typed by hand, value: 70.8}"
        Path(card).write_text(template.replace("{{ card_data }}", "{{ card_data }}\n" + typed))
    elif case == "bad_repo_id":
        repo_id = "just-a-name"
    elif case == "output_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    with pytest.raises(HubSharingError) as error:
        build_hub_folder(model, out, repo_id, card=card, results=results)
    assert message in str(error.value)
    if case.startswith("no_"):
        assert str(model) in str(error.value)
    if case == "output_not_empty":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()


@pytest.mark.slow
def test_push_script_offline_exits_with_a_clear_message(tiny_voc, tmp_path):
    env = {**subprocess_env(), "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_not_a_real_token"}
    command = [PYTHON, PUSH, "--model", str(tiny_voc), "--repo-id", "someone/model"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 3
    assert "error: HF_HUB_OFFLINE is set: pushing needs the network" in result.stderr
    assert "Traceback" not in result.stderr and "--dry-run" in result.stderr


@pytest.fixture
def online(monkeypatch, tmp_path):
    """huggingface_hub as if online, with no stored token and none in the environment."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)


def test_push_without_a_token_says_how_to_log_in(tiny_voc, online):
    with pytest.raises(HubPushError, match="No Hugging Face token: log in with `hf auth login` or set HF_TOKEN"):
        push_to_hub(tiny_voc, "someone/model")


def test_push_to_an_unreachable_hub_names_the_repo_and_the_cause(tiny_voc, online):
    # A closed local port: the real create_repo call fails at once, and no request leaves the machine.
    with pytest.raises(HubPushError) as error:
        push_to_hub(tiny_voc, "someone/model", token="hf_not_a_real_token", endpoint="http://127.0.0.1:9")
    assert "Could not push to http://127.0.0.1:9/someone/model: ConnectError" in str(error.value)


def test_push_checks_inputs_before_the_token(tmp_path, online):
    with pytest.raises(HubSharingError, match="no such directory"):
        push_to_hub(tmp_path / "missing", "someone/model")


@pytest.mark.slow
def test_card_usage_examples_run_on_the_folder(dry_run, monkeypatch):
    """The card's examples with the package installed: processor + model + post-processing, and the
    pseudo-labelling pipeline with tags; transformers never asks to run remote code."""
    import builtins

    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

    def refuse(*args, **kwargs):
        raise AssertionError(f"transformers prompted for input: {args}")

    monkeypatch.setattr(builtins, "input", refuse)

    image = Image.fromarray(np.full((20, 28, 3), 90, dtype=np.uint8))
    model = AutoModelForSemanticSegmentation.from_pretrained(dry_run).eval()
    processor = AutoImageProcessor.from_pretrained(dry_run)
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    assert tuple(mask.shape) == (20, 28) and int(mask.max()) < 21
    assert type(model) is CPFCTEForWeaklySupervisedSegmentation  # the installed package's class, no remote code

    labeller = pipeline("weakly-supervised-pseudo-labelling", model=str(dry_run))
    result = labeller(image, tags=["aeroplane", "person"], size=32)
    assert result["mask"].size == (28, 20) and set(result["labels"]) <= {"background", "aeroplane", "person"}


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """What `make demo` leaves: the procedural shapes (5 shapes + background) written in the VOC layout, a tiny
    CPF-CTE trained on their tags (`dataset="voc"` on that folder, as the demo does), and the held-out split
    pseudo-labelled with CRF and scored."""
    root = tmp_path_factory.mktemp("shapes_card")
    data = write_shapes_voc(str(root / "data"), num_train=8, num_val=6, config=ShapesConfig(image_size=32))
    assert len(data["class_names"]) == 6
    run_training(
        ModelArguments(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        ),
        DataArguments(dataset="voc", data_root=data["root"], train_split="train", eval_split="val",
                      cache_dir=str(root / "cache")),
        CPFCTETrainingArguments(
            output_dir=str(root / "model"), num_train_epochs=1, stage1_epochs=0, trainable_encoder_blocks=-1,
            per_device_train_batch_size=4, per_device_eval_batch_size=4, eval_strategy="no", save_strategy="no",
            load_best_model_at_end=False, report_to="none", dataloader_num_workers=0, use_cpu=True, eval_pictures=0,
        ),
    )  # fmt: skip
    run_pseudo_labeling(
        str(root / "model"),
        str(root / "pseudo"),
        dataset_name="voc",
        data_root=data["root"],
        split="val",
        config=PseudoLabelConfig(size=32, crf_workers=0, num_overlays=0, progress=False),
        dataset_kwargs={"cache_dir": str(root / "cache")},
    )
    return SimpleNamespace(root=root, model=root / "model", pseudo=root / "pseudo", class_names=data["class_names"])


@pytest.mark.slow
def test_pseudo_labels_of_the_training_and_held_out_splits_are_both_on_the_card(shapes_run, tmp_path):
    """What `cpfcte-hf run` passes: the training split's pseudo-labels (the paper's number) and the held-out
    split's; each is shown with its split, and one split given twice is still refused."""
    train = tmp_path / "pseudo_train"
    run_pseudo_labeling(
        str(shapes_run.model), str(train), dataset_name="voc", data_root=str(shapes_run.root / "data"), split="train",
        config=PseudoLabelConfig(size=32, crf_workers=0, num_overlays=0, progress=False),
        dataset_kwargs={"cache_dir": str(shapes_run.root / "cache")},
    )  # fmt: skip
    folder = build_hub_folder(shapes_run.model, tmp_path / "hub", "someone/both", results=[shapes_run.pseudo, train])
    crf = {m.split: m.mean_iou for m in folder.measurements.values() if m.key == "pseudo_label_crf_miou"}
    expected = {split: read_results(d / "report" / "metrics.json").mean_iou("CRF")
                for split, d in (("val", shapes_run.pseudo), ("train", train))}  # fmt: skip
    assert crf == expected
    text = (tmp_path / "hub" / "README.md").read_text()
    found = {(r.metric_name, r.dataset_split, r.metric_value) for r in ModelCard(text).data.eval_results}
    for split, value in expected.items():
        assert ("Pseudo-label mIoU with CRF", split, round(100 * value, 2)) in found
    rows = [line for line in text.splitlines() if line.startswith(f"| {MEASUREMENTS['pseudo_label_crf_miou']} |")]
    assert len(rows) == 2 and {row.split(" | ")[2] for row in rows} == {"train", "val"}
    with pytest.raises(HubSharingError, match="on the same split"):
        build_hub_folder(
            shapes_run.model, tmp_path / "again", "someone/x", results=[train, _copy(train, tmp_path / "copy")]
        )


@pytest.mark.slow
def test_the_demo_checkpoint_pushes_with_a_card_of_its_own_dataset_and_numbers(shapes_run):
    # Every evaluation wrote the one results schema, recording what it measured and with which model.
    training = read_results(shapes_run.model / "metrics.json")
    labels = read_results(shapes_run.pseudo / "report" / "metrics.json")
    assert (training.stage, labels.stage) == ("training", "pseudo_labels")
    assert training.class_names == labels.class_names == shapes_run.class_names
    assert Path(labels.model).resolve() == Path(training.model).resolve() == shapes_run.model.resolve()
    assert labels.settings["size"] == 32 and training.settings["DataArguments"]["dataset"] == "voc"

    out = shapes_run.root / "hub"
    folder = build_hub_folder(shapes_run.model, out, "someone/cpf-cte-shapes", results=[shapes_run.pseudo])
    assert folder.card == "shapes" and set(folder.measurements) == {
        "training_eval_miou", "pseudo_label_bpm_miou", "pseudo_label_crf_miou"
    }  # fmt: skip
    text = (out / "README.md").read_text()
    metadata, body = front_matter(text)
    assert body.lstrip().startswith("# CPF-CTE (ViT) on procedural shapes")
    assert "VOC" not in text and "COCO" not in text and PAPER_HEADING not in text  # no one else's dataset or numbers
    assert "datasets" not in metadata and "synthetic" in metadata["tags"]
    assert "6 classes of procedural shapes" in body and "`disc`" in body
    expected = {
        "Validation pseudo-label mIoU (trainer, no CRF)": training.mean_iou("BPM"),
        "Pseudo-label mIoU without CRF (BPM)": labels.mean_iou("BPM"),
        "Pseudo-label mIoU with CRF": labels.mean_iou("CRF"),
    }
    assert model_index_values(metadata) == {name: (round(100 * v, 2), "val") for name, v in expected.items()}
    for result in ModelCard(text).data.eval_results:
        assert (result.dataset_type, result.dataset_name) == ("shapes", "procedural shapes")


@pytest.mark.slow
def test_a_checkpoint_from_before_the_results_schema_still_gets_its_numbers(shapes_run, tmp_path):
    """A training directory with only the trainer's eval_results.json (no metrics.json) and a pseudo-label report
    without `stage` / `model`: the card reads both as before."""
    model = _copy(shapes_run.model, tmp_path / "model")
    (model / "metrics.json").unlink()
    pseudo = _copy(shapes_run.pseudo, tmp_path / "pseudo")
    report = json.loads((pseudo / "report" / "metrics.json").read_text())
    for key in ("schema", "schema_version", "stage", "model", "settings", "command", "data_root"):
        report.pop(key)
    (pseudo / "report" / "metrics.json").write_text(json.dumps(report))
    folder = build_hub_folder(model, tmp_path / "hub", "someone/old", results=[pseudo])
    assert folder.card == "shapes"
    evaluation = json.loads((model / "eval_results.json").read_text())
    assert folder.measurements["training_eval_miou"].mean_iou == evaluation["eval_mean_iou"]
    assert folder.measurements["pseudo_label_crf_miou"].mean_iou == report["predictions"]["CRF"]["mean_iou"]


@pytest.mark.parametrize(
    "recorded, key, title",
    [
        ([("tagged", "/photos/garden")], "tagged", "tagged images (`garden`)"),
        ([("hub", "someone/tagged-birds")], "hub", "the Hub dataset `someone/tagged-birds`"),
        ([("hub", "/data/birds.parquet")], "hub", "`hub` (`birds.parquet`)"),  # a local file: no Hub id
        ([("voc", "/data/my_voc_layout")], "voc", "a folder in the PASCAL VOC 2012 layout (`my_voc_layout`)"),
        ([(None, None)], "custom", "a dataset not recorded with this checkpoint"),
    ],
)
def test_cards_name_the_dataset_the_run_recorded_never_a_class_count_guess(recorded, key, title):
    # 21 classes that are not VOC's: no VOC card, no paper numbers.
    names = ["background", *[f"thing{i}" for i in range(20)]]
    dataset = describe_dataset(names, recorded)
    assert (dataset.key, dataset.name, dataset.paper) == (key, title, ())
    assert describe_dataset(VOC_CLASSES, [("voc", "/data/VOC2012")]).paper  # the real VOC classes: the VOC card
    with pytest.raises(HubSharingError, match="different datasets"):
        describe_dataset(names, [("voc", None), ("coco", None)])


@pytest.mark.slow
def test_an_evaluate_report_of_the_masks_is_read_like_the_labelling_report(shapes_run, tmp_path):
    """`evaluate` names its prediction sets after the folders (bpm, crf) and records stage "evaluation"."""
    report = run_evaluation(
        [shapes_run.pseudo / "bpm", shapes_run.pseudo / "crf"], dataset_name="voc",
        data_root=str(shapes_run.root / "data"), split="val", report_dir=tmp_path / "eval", num_overlays=0,
        dataset_kwargs={"cache_dir": str(shapes_run.root / "cache")},
    )  # fmt: skip
    assert report["stage"] == "evaluation" and set(report["predictions"]) == {"bpm", "crf"}
    folder = build_hub_folder(shapes_run.model, tmp_path / "hub", "someone/eval", results=[tmp_path / "eval"])
    assert folder.measurements["pseudo_label_crf_miou"].mean_iou == report["predictions"]["crf"]["mean_iou"]
    assert folder.measurements["pseudo_label_bpm_miou"].source == tmp_path / "eval" / "metrics.json"


@pytest.mark.slow
def test_stage_two_writes_the_results_schema_and_its_values_reach_the_card(shapes_run, tmp_path):
    """A (tiny, untrained) DeepLab-v2 on the shapes classes, evaluated by stage 2's `predict_split`: its report is
    a stage-2 results file, and the CPF-CTE card shows its multi-scale values (the same-weights check is stage 1's
    only: stage 2 is another model)."""
    from cpfcte_hf.data import load_voc
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split

    from .deeplab_helpers import tiny_deeplab_config

    config = tiny_deeplab_config(6, id2label=dict(enumerate(shapes_run.class_names)))
    deeplab = DeepLabV2ForSemanticSegmentation(config).eval()
    val = load_voc(str(shapes_run.root / "data"), "val", cache_dir=str(shapes_run.root / "cache"))
    out = tmp_path / "deeplab" / "predictions" / "val"
    settings = MultiScaleEvalConfig(scales=(1.0, 0.5), crf_workers=0, num_overlays=0)
    predict_split(deeplab, val, out, settings, deeplab_image_processor(33), dataset_name="voc", split="val")
    stage2 = read_results(out / "report" / "metrics.json")
    assert stage2.stage == "stage2" and set(stage2.predictions) == {"MS", "MS+CRF"}
    assert stage2.settings["scales"] == [1.0, 0.5]
    folder = build_hub_folder(shapes_run.model, tmp_path / "hub", "someone/two", results=[tmp_path / "deeplab"])
    assert folder.measurements["deeplab_ms_crf_miou"].mean_iou == stage2.mean_iou("MS+CRF")
    assert folder.measurements["deeplab_ms_miou"].split == "val" and folder.not_measured[0] == "pseudo_label_crf_miou"
    # The report records the model it scored; this one was not trained by `train-deeplab`, and the card says so.
    assert stage2.model_info["architecture"]["hidden_sizes"] == [8, 16, 16, 32]
    assert stage2.model_info["num_parameters"] == deeplab.num_parameters() and stage2.model_info["run_args"] is None
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| Architecture | ResNet with bottleneck blocks (1/1/1/1 per stage, widths 8/16/16/32" in card
    assert "| Training | not recorded with the evaluated weights" in card
    assert "| results/deeplab/metrics.json | val | scales 1.0, 0.5 fused by max, then the dense CRF |" in card
    # A report written before `model_info` was recorded: the card says the model is unknown, and describes nothing.
    report = json.loads((out / "report" / "metrics.json").read_text())
    del report["model_info"]
    (out / "report" / "metrics.json").write_text(json.dumps(report))
    build_hub_folder(shapes_run.model, tmp_path / "old", "someone/old", results=[tmp_path / "deeplab"])
    card = (tmp_path / "old" / "README.md").read_text()
    assert "do not record their model" in card and "| Architecture |" not in card


@pytest.mark.slow
def test_untagged_stage_one_and_single_scale_stage_two_reach_the_card(shapes_run, tmp_path):
    """What `cpfcte-hf run` measures besides the tagged pseudo-labels and the multi-scale stage 2: stage 1 on untagged
    images (`label --no_use_image_labels --no_crf`) and stage 2 at one scale without CRF. Their files record those
    settings, and the card shows each as a value of its own, next to (not instead of) the tagged and multi-scale
    ones."""
    from cpfcte_hf.data import load_voc
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split

    from .deeplab_helpers import tiny_deeplab_config

    untagged = tmp_path / "untagged"
    run_pseudo_labeling(
        str(shapes_run.model), str(untagged), dataset_name="voc", data_root=str(shapes_run.root / "data"), split="val",
        config=PseudoLabelConfig(size=32, use_image_labels=False, crf=False, num_overlays=0, progress=False),
        dataset_kwargs={"cache_dir": str(shapes_run.root / "cache")},
    )  # fmt: skip
    deeplab = DeepLabV2ForSemanticSegmentation(
        tiny_deeplab_config(6, id2label=dict(enumerate(shapes_run.class_names)))
    ).eval()
    val = load_voc(str(shapes_run.root / "data"), "val", cache_dir=str(shapes_run.root / "cache"))
    for name, scales, crf in (("single", (1.0,), False), ("multi", (1.0, 0.5), True)):
        settings = MultiScaleEvalConfig(scales=scales, crf=crf, crf_workers=0, num_overlays=0)
        out = tmp_path / name / "predictions" / "val"
        predict_split(deeplab, val, out, settings, deeplab_image_processor(33), dataset_name="voc", split="val")

    sources = {"tagged": shapes_run.pseudo, "untagged": untagged, "single": tmp_path / "single"}
    sources["multi"] = tmp_path / "multi"
    folder = build_hub_folder(shapes_run.model, tmp_path / "hub", "someone/all", results=list(sources.values()))
    report = {name: read_results(next(d.rglob("report/metrics.json"))) for name, d in sources.items()}
    expected = {
        "pseudo_label_bpm_miou": report["tagged"].mean_iou("BPM"),
        "stage1_untagged_miou": report["untagged"].mean_iou("BPM"),
        "deeplab_miou": report["single"].mean_iou("MS"),
        "deeplab_ms_miou": report["multi"].mean_iou("MS"),
        "deeplab_ms_crf_miou": report["multi"].mean_iou("MS+CRF"),
    }
    assert {key: folder.measurements[key].mean_iou for key in expected} == expected
    assert folder.not_measured == [] and {m.split for m in folder.measurements.values()} == {"val"}
    text = (tmp_path / "hub" / "README.md").read_text()
    values = model_index_values(front_matter(text)[0])
    assert values["mIoU without tags (stage 1, no CRF)"] == (round(100 * expected["stage1_untagged_miou"], 2), "val")
    assert values["DeepLab-v2 mIoU, single scale"] == (round(100 * expected["deeplab_miou"], 2), "val")
    assert values["DeepLab-v2 mIoU, multi-scale"] == (round(100 * expected["deeplab_ms_miou"], 2), "val")
    specs = yaml.safe_load((CARD_TEMPLATE.parent / "cards.yaml").read_text())["measurements"]
    for key in ("stage1_untagged_miou", "deeplab_miou"):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {specs[key]['description']} |")]
        assert f"| {100 * expected[key]:.2f} |" in row
    record = json.loads((tmp_path / "hub" / "results.json").read_text())
    assert {"stage1_untagged_miou", "deeplab_miou"} <= set(record["measurements"])


def test_local_paths_are_shortened_to_their_last_component_and_nothing_else_changes():
    assert public_text("/home/alice/data/VOCdevkit/VOC2012") == "…/VOC2012"
    command = "cpfcte-hf label --model /tmp/run/stage1 --output_dir=/tmp/run/pseudo_labels --size 64"
    assert public_text(command) == "cpfcte-hf label --model …/stage1 --output_dir=…/pseudo_labels --size 64"
    assert (
        public_text("/tmp/run/crf/2007_000032.png: cannot identify image")
        == "…/2007_000032.png: cannot identify image"
    )
    assert public_text("C:\\Users\\alice\\photos") == "…/photos"
    for kept in ("data/VOCdevkit/VOC2012", "https://huggingface.co/a/b", "bpm/<id>.png", "1/2", "H/patch", "…/data"):
        assert public_text(kept) == kept
    assert public_text(public_text("/a/b/c")) == "…/c"
    assert public_value({"/abs/key": ["/a/b", 3, None, {"x": "/c/d"}]}) == {"…/key": ["…/b", 3, None, {"x": "…/d"}]}


def test_the_length_of_a_training_says_what_stopped_it():
    stopped = {"max_steps": 4, "num_train_epochs": 12}
    assert run_length(stopped, {"global_step": 4, "epoch": 4 / 3}) == (
        "4 optimizer steps = 1.33 epochs; limit: max_steps 4, which overrides num_train_epochs 12"
    )
    epochs = {"max_steps": -1, "num_train_epochs": 3.0}
    assert (
        run_length(epochs, {"global_step": 30, "epoch": 3.0})
        == "30 optimizer steps = 3.00 epochs; limit: num_train_epochs 3"
    )
    assert "(stopped before its limit)" in run_length(epochs, {"global_step": 20, "epoch": 2.0})
    assert run_length(epochs, None) == "not recorded (no trainer_state.json); limit: num_train_epochs 3"
