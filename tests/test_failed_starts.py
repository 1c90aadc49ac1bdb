"""A start that cannot work says so in one line and leaves nothing behind (issue 19): `train`, `run` (and `demo`),
`train-deeplab`, `push` and `reproduce` check data, tags, model locations, the preset and bf16 before they write a
file, build a model or print anything long; `--print_config` of every packaged preset works on a CPU-only machine."""

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm.auto import tqdm
from transformers import ViTModel

from cpfcte_hf.cli.main import main
from cpfcte_hf.data import build_dataset, check_dataset
from cpfcte_hf.utils.arguments import COMMAND_SECTIONS, available_presets, load_preset
from cpfcte_hf.utils.trainer_mixins import bf16_available
from tests.data_trees import write_tagged_tree, write_voc_tree
from tests.deeplab_helpers import tiny_deeplab_config
from tests.utils import save_tiny_checkpoint, subprocess_env, tiny_vit_config


CLI = str(Path(sys.executable).with_name("cpfcte-hf"))
NO_BF16 = pytest.mark.skipif(bf16_available(), reason="this machine has bf16: the presets' bf16 runs here")


def paths_under(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny VOC tree (train_aug, val, train), a tiny local ViT for `--backbone`, pseudo-label masks, tagged images."""
    root = tmp_path_factory.mktemp("inputs")
    voc = write_voc_tree(root / "voc", splits={"train_aug": 2, "val": 2, "train": 2})
    ViTModel(tiny_vit_config()).save_pretrained(root / "vit")
    (root / "pseudo").mkdir()
    for item_id, path in voc["images"].items():
        (root / "pseudo" / f"{item_id}.png").write_bytes(
            Path(path.replace("JPEGImages", "SegmentationClassAug").replace(".jpg", ".png")).read_bytes()
        )
    write_tagged_tree(root / "tagged")
    (root / "tagged" / "tags.csv").rename(root / "tagged" / "renamed.csv")  # no tag file where it is looked for
    (root / "bad.yaml").write_text("base: shapes\nlabel:\n  sise: 3\n")
    return {"voc": str(root / "voc"), "vit": str(root / "vit"), "pseudo": str(root / "pseudo"), "root": root}


# (argv, the error line's text); {voc}, {vit}, {pseudo}, {root} are the `inputs`. Every case ends with status 2.
FAILED_STARTS = {
    "run: missing data on a CPU": (["run", "--config", "voc", "--data_root", "data/VOCdevkit/VOC2012"],
                                   "Dataset root not found: data/VOCdevkit/VOC2012"),
    "train: missing data on a CPU": (["train", "--config", "voc"], "Dataset root not found: data/VOCdevkit/VOC2012"),
    "train: bad data root": (["train", "--config", "shapes", "--dataset", "voc", "--data_root", "nowhere"],
                             "Dataset root not found: nowhere"),
    "train: missing split file": (["train", "--config", "shapes", "--dataset", "voc", "--data_root", "{voc}",
                                   "--train_split", "trainval"], "Split file not found: "),
    "train: unknown loader option": (["train", "--config", "shapes", "--dataset", "voc", "--data_root", "{voc}",
                                      "--train_split", "train_aug", "--dataset_option", "imag_size=3"],
                                     "--dataset_option imag_size: not an option of the 'voc' loader"),
    "train: no tag file": (["train", "--config", "shapes", "--dataset", "tagged", "--data_root", "{root}/tagged"],
                           "No tag file in "),
    "train: missing checkpoint": (["train", "--config", "shapes", "--model_name_or_path", "runs/a/b"],
                                  "--model_name_or_path: Model directory 'runs/a/b' not found"),
    "train: image size and patch disagree": (["train", "--config", "shapes", "--image_size", "100"],
                                             "--image_size 100 is not a multiple of the encoder's patch size 8 (e.g. 96)"),
    "train: equivariance views do not tile": (["train", "--config", "demo", "--image_size", "64"],
                                              "Four 48-px views must tile the 64-px training size"),
    "train: bf16 on a CPU": (["train", "--config", "voc", "--data_root", "{voc}", "--backbone", "{vit}"],
                             "bf16 is on (the GPU presets turn it on), but this machine has no GPU with bfloat16: "
                             "pass --bf16 false"),
    "train-deeplab: bad data root": (["train-deeplab", "--config", "deeplab_voc", "--data_root", "nowhere",
                                      "--pseudo_labels", "nowhere"], "Dataset root not found: nowhere"),
    "train-deeplab: missing pseudo-labels": (["train-deeplab", "--config", "deeplab_voc", "--data_root", "{voc}",
                                              "--pseudo_labels", "nowhere"], "Pseudo-label directory 'nowhere'"),
    "train-deeplab: backbone offline, not cached": (["train-deeplab", "--config", "deeplab_voc", "--data_root",
                                                     "{voc}", "--pseudo_labels", "{pseudo}", "--backbone",
                                                     "no-such-org/no-such-resnet"],
                                                    "--backbone: no-such-org/no-such-resnet is not in the local Hub "
                                                    "cache"),
    "train-deeplab: evaluate nothing trained": (["train-deeplab", "--config", "deeplab_shapes", "--dataset", "voc",
                                                 "--data_root", "{voc}", "--train_split", "train_aug", "--do_train",
                                                 "false"], "--do_train false evaluates a trained model"),
    "train-segmenter: encoder offline, not cached": (["train-segmenter", "--config", "segformer_voc", "--data_root",
                                                      "{voc}", "--pseudo_labels", "{pseudo}"],
                                                     "--model_name_or_path: nvidia/mit-b1 is not in the local Hub "
                                                     "cache"),
    "train-segmenter: unknown architecture": (["train-segmenter", "--config", "segformer_shapes", "--dataset", "voc",
                                               "--data_root", "{voc}", "--train_split", "train_aug",
                                               "--pseudo_labels", "{pseudo}", "--model_type", "segformerr"],
                                              "--model_type 'segformerr' is not a semantic-segmentation architecture"),
    "train-segmenter: override of no field": (["train-segmenter", "--config", "segformer_shapes", "--dataset", "voc",
                                               "--data_root", "{voc}", "--train_split", "train_aug",
                                               "--pseudo_labels", "{pseudo}", "--config_overrides", "depthz=[1]"],
                                              "'depthz' is not a field of the segformer config"),
    "run: unknown key in a section": (["run", "--config", "{root}/bad.yaml", "--dataset", "voc", "--data_root",
                                       "{voc}", "--steps", "pseudo_labels"],
                                      "Unknown key(s) in {root}/bad.yaml (section label): sise"),
    # (stage 2's ImageNet backbone is not in the Hub cache here: a problem of its own, found before any library loads)
    "run: bf16 on a CPU": (["run", "--config", "voc", "--data_root", "{voc}", "--override", "backbone={vit}",
                            "train_deeplab.backbone=none"], "pass --override bf16=false"),
    "demo: bad data root": (["demo", "--dataset", "voc", "--data_root", "nowhere"], "Dataset root not found: nowhere"),
    "reproduce: bad data root": (["reproduce", "--dataset", "voc", "--data_root", "nowhere"],
                                 "Dataset root not found: nowhere"),
    "reproduce: bf16 on a CPU": (["reproduce", "--dataset", "voc", "--data_root", "{voc}", "--tables", "4",
                                  "--override", "backbone={vit}"], "pass --override bf16=false"),
    "push: missing checkpoint": (["push", "--model", "nowhere", "--repo_id", "a/b", "--dry_run", "hub"],
                                 "--model nowhere: no such directory."),
}  # fmt: skip
NEEDS_NO_BF16 = {"train: bf16 on a CPU", "run: bf16 on a CPU", "reproduce: bf16 on a CPU"}


@pytest.mark.parametrize("case", sorted(FAILED_STARTS))
def test_a_failed_start_is_one_error_line_and_leaves_nothing(case, inputs, tmp_path, monkeypatch, capfd):
    if case in NEEDS_NO_BF16 and bf16_available():
        pytest.skip("this machine has bf16")
    argv, message = FAILED_STARTS[case]
    argv = [arg.format(**inputs) for arg in argv]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("a file of the user's")
    monkeypatch.chdir(cwd)
    before = paths_under(cwd), paths_under(inputs["root"])
    status = main(argv)
    printed = capfd.readouterr()  # file descriptors: library logs and warnings too
    assert status == 2, printed
    lines = printed.err.strip().splitlines()
    assert printed.out == "" and len(lines) == 1, printed  # nothing before the error, no traceback
    assert lines[-1].startswith("error: ") and message.format(**inputs) in lines[-1], lines[-1]
    assert (paths_under(cwd), paths_under(inputs["root"])) == before  # no run_preset.yaml, no empty folder


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--config", "voc", "--data_root", "data/VOCdevkit/VOC2012"], "Dataset root not found"),
        (["train", "--config", "shapes", "--dataset", "voc", "--data_root", "nowhere"], "Dataset root not found"),
    ],
    ids=["run", "train"],
)
def test_the_real_command_prints_one_line_and_writes_nothing(argv, message, tmp_path):
    """The issue's two cases as a user runs them: a process, its whole output, the folder it ran in."""
    result = subprocess.run([CLI, *argv], capture_output=True, text=True, cwd=tmp_path, env=subprocess_env())
    assert result.returncode == 2
    assert result.stdout == "" and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert paths_under(tmp_path) == []


# Stage 1 on the tiny tree, tiny, with a learning rate that makes the loss NaN within a few steps.
DIVERGING = {
    "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "report_to": "none", "dataloader_num_workers": 0, "per_device_train_batch_size": 1,
    "learning_rate": 1e30, "stage1_learning_rate": 1e30, "max_grad_norm": 0, "max_steps": 6,
    "equivariance_loss_weight": 0,
}  # fmt: skip


def test_an_error_during_training_is_the_last_line(inputs, tmp_path, capfd):
    """A run that stops while training (here: the loss becomes NaN) ends with its error line: the progress bar the
    trainer leaves open is closed before it, not redrawn after it when it is collected."""
    argv = ["train", "--config", "shapes", "--dataset", "voc", "--data_root", inputs["voc"], "--train_split"]
    argv += ["train_aug", "--output_dir", str(tmp_path / "out")]
    argv += [arg for key, value in DIVERGING.items() for arg in (f"--{key}", str(value))]
    open_before = set(tqdm._instances)
    assert main(argv) == 3
    assert set(tqdm._instances) <= open_before  # no bar left to redraw itself when the interpreter collects it
    gc.collect()
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: The training loss became nan"), lines[-3:]


def test_a_run_that_stops_at_a_step_ends_with_its_error_line(inputs, tmp_path, capfd):
    """`demo` (= `run`) whose stage 1 fails: the step's error, a short summary, then one line naming the step; no
    table of values that were not measured."""
    overrides = [f"{key}={value}" for key, value in DIVERGING.items()]
    argv = ["demo", "--dataset", "voc", "--data_root", inputs["voc"], "--train_split", "train_aug"]
    assert main([*argv, "--output_dir", str(tmp_path / "run"), "--override", *overrides]) == 3
    printed = capfd.readouterr()
    lines = (printed.out + printed.err).strip().splitlines()
    assert any(line.startswith("error: The training loss became nan") for line in lines)
    assert printed.err.strip().splitlines()[-1] == (
        "error: the run stopped at step stage1 (exit status 3; its error is above). The same command resumes the run "
        "once the cause is fixed."
    )
    assert "n/a" not in printed.out and "CPF-CTE demo" not in printed.out
    assert not (tmp_path / "run" / "demo_results.json").exists()


def _commands_of(name: str) -> list[str]:
    """The commands a preset drives: its own (`command:`, default train), its sections', and `run`."""
    preset = load_preset(name)
    commands = {preset.get("command", "train"), "run"}
    commands |= {section for section in COMMAND_SECTIONS if isinstance(preset.get(section), dict)}
    return sorted(command.replace("_", "-") for command in commands)


@NO_BF16
def test_print_config_of_every_packaged_preset_works_without_a_gpu(capsys):
    printed_bf16 = []
    for name in available_presets():
        for command in _commands_of(name):
            assert main([command, "--config", name, "--print_config"]) == 0, (name, command, capsys.readouterr())
            resolved = json.loads(capsys.readouterr().out)
            training = resolved.get("CPFCTETrainingArguments") or resolved.get("DeepLabV2TrainingArguments") or {}
            if training.get("bf16"):
                printed_bf16.append(name)
    # The GPU recipes print their own value: bf16 stays on in what is printed.
    assert {"voc", "coco", "voc-plus", "coco-plus", "voc-vitpcm", "coco-vitpcm", "voc-dinov2"} <= set(printed_bf16)


@NO_BF16
def test_bf16_arguments_build_anywhere_and_the_trainers_refuse_them(tmp_path):
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.stage1.trainer import CPFCTETrainer, CPFCTETrainingArguments
    from cpfcte_hf.stage2.trainer import DeepLabV2Trainer, DeepLabV2TrainingArguments

    model, _ = save_tiny_checkpoint(tmp_path / "tiny")
    args = CPFCTETrainingArguments(output_dir=str(tmp_path / "a"), bf16=True, report_to="none")
    assert args.bf16 is True and args.to_dict()["bf16"] is True
    with pytest.raises(ValueError, match="no GPU with bfloat16: pass --bf16 false"):
        CPFCTETrainer(model=model, args=args)
    deeplab_args = DeepLabV2TrainingArguments(output_dir=str(tmp_path / "b"), bf16_full_eval=True, report_to="none")
    with pytest.raises(ValueError, match="bf16_full_eval is on"):
        DeepLabV2Trainer(model=DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()), args=deeplab_args)


def test_check_dataset_says_what_the_loader_would(inputs, tmp_path):
    """Each source's cheap check raises the loader's own error, without decoding an image."""
    voc, tagged = inputs["voc"], str(inputs["root"] / "tagged")
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    cases = [
        ("voc", str(tmp_path / "nowhere"), "train", {}),
        ("voc", voc, "trainval", {}),
        ("voc", voc, "val", {"mask_dir": "NoMasks"}),
        ("coco", str(tmp_path / "coco"), "val", {}),  # ToCo layout without a split file
        ("coco", str(tmp_path / "coco"), "val", {"layout": "instances"}),
        ("tagged", tagged, "train", {}),
        ("tagged", tagged, "train", {"tags": str(inputs["root"] / "tagged" / "none.csv")}),
        ("hub", str(tmp_path / "data.parquet"), "train", {}),
    ]
    for name, root, split, options in cases:
        with pytest.raises((OSError, ValueError)) as checked:
            check_dataset(name, root, split, **options)
        with pytest.raises((OSError, ValueError)) as loaded:
            build_dataset(name, root, split, **options)
        assert (type(checked.value), str(checked.value)) == (type(loaded.value), str(loaded.value)), (name, options)
    with pytest.raises(ValueError, match="--dataset_option class_name: not an option of the 'voc' loader"):
        check_dataset("voc", voc, "val", class_name=["a"])
    check_dataset("voc", voc, "train_aug")  # a good tree passes
    check_dataset("tagged", tagged, "train", tags=str(inputs["root"] / "tagged" / "renamed.csv"))
