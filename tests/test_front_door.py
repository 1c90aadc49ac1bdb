"""The front door: `import cpfcte_hf`, `--help` and misspelt options import neither torch, transformers nor datasets;
the models still register with transformers whichever is imported first."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.utils import subprocess_env


HEAVY = ("torch", "transformers", "datasets")
COMMANDS = ["train", "label", "evaluate", "train-deeplab", "push", "run", "demo", "reproduce", "bench"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )


def heavy_after(argv: list[str]) -> tuple[int, str, str, list[str]]:
    """Runs `cpfcte-hf ARGV` in a fresh interpreter: (status, stdout, stderr, heavy modules imported)."""
    result = run_python(
        f"""
        import json, sys
        from cpfcte_hf.cli.main import main
        try:
            status = main({argv!r})
        except SystemExit as stop:
            status = stop.code
        heavy = [name for name in {HEAVY!r} if name in sys.modules]
        print("HEAVY=" + json.dumps([status, heavy]), file=sys.stderr)
        """
    )
    marker = [line for line in result.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, result.stderr
    status, heavy = json.loads(marker[-1][len("HEAVY=") :])
    stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("HEAVY="))
    return status, result.stdout, stderr, heavy


def test_importing_the_package_imports_no_heavy_library():
    result = run_python(
        "import sys, cpfcte_hf; print([m for m in ('torch', 'transformers', 'datasets') if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command):
    status, out, err, heavy = heavy_after([command, "--help"] if command else ["--help"])
    assert status == 0, err
    assert heavy == [], f"`cpfcte-hf {command} --help` imported {heavy}"
    assert out.startswith("usage: cpfcte-hf"), out[:200]
    if command:
        assert f"cpfcte-hf {command}" in out.splitlines()[0]


def test_train_help_lists_ours_first_and_trainers_behind_help_all():
    status, out, _, _ = heavy_after(["train", "--help"])
    assert status == 0
    assert "--model_name_or_path" in out and "--dataset" in out and "--et_crop_p" in out
    assert "--learning_rate" not in out and "Trainer options" in out and "--help_all" in out
    # The examples of the command's docstring are printed as written, not reflowed.
    assert "    cpfcte-hf train --config shapes --num_train_epochs 3\n" in out
    status, out_all, _, heavy = heavy_after(["train", "--help_all"])
    assert status == 0 and "--learning_rate" in out_all and "--per_device_train_batch_size" in out_all
    assert out_all.index("--model_name_or_path") < out_all.index("--learning_rate")


@pytest.mark.parametrize(
    "argv, suggestion",
    [
        (["label", "--modle", "x"], "--model"),
        (["evaluate", "--pred", "a", "--datset", "voc"], "--dataset"),
        (["push", "--repoid", "a/b"], "--repo_id"),
        (["run", "--config", "demo", "--ouput_dir", "x"], "--output_dir"),
        # Trainer's options, from the stored table of `TrainingArguments` (no abbreviation is taken either)
        (["train", "--learning_rat", "1"], "--learning_rate"),
        (["train-deeplab", "--max_step", "3"], "--max_steps"),
    ],
)
def test_a_misspelt_option_is_one_line_without_heavy_libraries(argv, suggestion):
    status, out, err, heavy = heavy_after(argv)
    assert status == 2
    assert heavy == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unrecognised arguments: ") and suggestion in lines[0], err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--learning_rate", "abc"], "invalid float value: 'abc'"),
        (["train", "--num_train_epochs"], "expected one argument"),
        (["train-deeplab", "--do_train", "maybe"], "Truthy value expected: got maybe"),
        (["train", "--lr_scheduler_type", "sideways"], "invalid choice: 'sideways'"),
        (["label", "--size", "big"], "invalid int value: 'big'"),
        (["evaluate", "stray"], "unrecognised arguments: stray"),
    ],
)
def test_a_bad_value_is_one_line_without_heavy_libraries(argv, message):
    status, _, err, heavy = heavy_after(argv)
    assert status == 2 and heavy == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["label", "--model", "m", "--dataset", "voc", "--data_root", "{missing}", "--output_dir", "o"],
            "Dataset root",
        ),
        (["label", "--model", "{missing}", "--dataset", "shapes", "--output_dir", "o"], "--model: Model directory"),
        (["label", "--dataset", "shapes", "--output_dir", "o"], "required: --model"),
        (["train", "--dataset", "voc", "--data_root", "{missing}", "--output_dir", "o"], "Dataset root"),
        (
            ["train", "--dataset", "shapes", "--model_name_or_path", "{missing}"],
            "--model_name_or_path: Model directory",
        ),
        (["evaluate", "--dataset", "voc", "--data_root", "{missing}", "--pred", "{missing}"], "Prediction directory"),
        (["run", "--dataset", "voc", "--data_root", "{missing}"], "--config PRESET is required"),
        (["run", "--config", "voc", "--data_root", "{missing}", "--output_dir", "{out}"], "Dataset root"),
        (
            ["run", "--config", "shapes", "--output_dir", "{out}", "--override", "train_deeplab.backbone={missing}"],
            "--backbone: Model directory",
        ),
        (["run", "--config", "shapes", "--output_dir", "{out}", "--steps", "stage2"], "Pseudo-label directory"),
        (["run", "--config", "shapes", "--output_dir", "{out}", "--steps", "pseudo_labels"], "--model: Model"),
        (["run", "--config", "shapes", "--output_dir", "{out}", "--export", "parquet"], "invalid choice: 'parquet'"),
        (["export", "--labels", "x", "--format", "csv", "--output_dir", "{out}"], "invalid choice: 'csv'"),
        (["push", "--model", "{missing}", "--repo_id", "a/b", "--dry_run", "{out}"], "no such directory"),
        (["reproduce", "--dataset", "voc", "--data_root", "{missing}", "--output_dir", "{out}"], "Dataset root"),
        (
            ["train-deeplab", "--config", "deeplab_voc", "--data_root", "{missing}", "--pseudo_labels", "p"],
            "Dataset root",
        ),
        (
            ["train-segmenter", "--dataset", "shapes", "--pseudo_labels", "{missing}", "--output_dir", "{out}"],
            "Pseudo-label directory",
        ),
        (["train-deeplab", "--dataset", "shapes", "--do_train", "false"], "--do_train false evaluates a trained"),
        (
            ["train-segmenter", "--dataset", "shapes", "--model_type", "segformerr", "--pseudo_labels", "p"],
            "--model_type 'segformerr' is not a semantic-segmentation architecture; choose one of deeplab_v2, ",
        ),
        (
            ["train-deeplab", "--dataset", "shapes", "--do_train", "false", "--model_name_or_path", "{missing}"],
            "--model_name_or_path: Model directory",
        ),
    ],
)
def test_an_input_error_is_one_line_without_heavy_libraries(argv, message, tmp_path):
    """The data (root, split, tags) and the model's folder are checked before transformers is imported."""
    out = tmp_path / "out"
    status, _, err, heavy = heavy_after([arg.format(missing=tmp_path / "missing", out=out) for arg in argv])
    lines = err.strip().splitlines()
    assert status == 2 and heavy == [] and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()  # refused before anything is written


def test_reproduce_checks_the_split_it_scores_before_the_libraries_load(tmp_path):
    """The VOC tables score pseudo-labels of `train`: a tree without that split file is refused, once each cell's
    stage-1 data and model check out, still without torch, transformers or datasets."""
    from transformers import ViTModel

    from tests.data_trees import write_voc_tree
    from tests.utils import tiny_vit_config

    voc = write_voc_tree(tmp_path / "voc", splits={"train_aug": 2, "val": 2})  # no train.txt
    ViTModel(tiny_vit_config()).save_pretrained(tmp_path / "vit")
    argv = ["reproduce", "--dataset", "voc", "--data_root", voc["voc_dir"], "--tables", "4"]
    argv += ["--output_dir", str(tmp_path / "out"), "--override", f"backbone={tmp_path / 'vit'}"]
    status, _, err, heavy = heavy_after(argv)
    lines = err.strip().splitlines()
    assert status == 2 and heavy == [] and len(lines) == 1, err
    assert lines[0].startswith("error: Split file not found") and lines[0].endswith("train.txt"), lines[0]
    assert not (tmp_path / "out").exists()


def test_the_front_door_copies_of_library_facts_agree():
    """What the front door knows without importing the libraries: the export formats, DeepLab-v2's model type, and
    the defaults of Trainer's options it builds the early checks on (stage 2 trains unless told not to)."""
    from cpfcte_hf.cli.commands.export import EXPORT_FORMATS
    from cpfcte_hf.export import FORMATS
    from cpfcte_hf.models import CPFCTE_MODEL_TYPE, DEEPLAB_MODEL_TYPE
    from cpfcte_hf.models.cpfcte.configuration_cpfcte import CPFCTEConfig
    from cpfcte_hf.models.deeplab_v2.configuration_deeplab import DeepLabV2Config
    from cpfcte_hf.stage2.arguments import parse_arguments
    from cpfcte_hf.stage2.trainer import DeepLabV2TrainingArguments

    assert EXPORT_FORMATS == FORMATS and DEEPLAB_MODEL_TYPE == DeepLabV2Config.model_type
    assert CPFCTE_MODEL_TYPE == CPFCTEConfig.model_type
    *_, light = parse_arguments(["--dataset", "shapes", "--max_steps", "7"], light=True)
    *_, real = parse_arguments(["--dataset", "shapes", "--max_steps", "7", "--output_dir", "o"])
    assert isinstance(real, DeepLabV2TrainingArguments)
    assert (light.do_train, light.max_steps, light.learning_rate) == (real.do_train, 7, real.learning_rate)
    assert light.do_train is True  # stage 2's default (transformers' own TrainingArguments says False)


@pytest.mark.parametrize("command", ["train", "label", "train-deeplab", "run"])
def test_a_preset_error_is_one_line_without_heavy_libraries(command, tmp_path):
    """A missing preset, and a preset key that is no option of the command (checked against the stored table of
    Trainer's options for `train`/`train-deeplab`), are refused before transformers is imported."""
    status, _, err, heavy = heavy_after([command, "--config", str(tmp_path / "missing.yaml")])
    assert status == 2 and heavy == [] and err.strip().startswith("error: Config preset not found"), err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: shapes\nnot_an_option: 3\n")  # run: a flat key is stage 1's, checked as its step
    status, _, err, heavy = heavy_after([command, "--config", str(bad), "--output_dir", str(tmp_path / "out")])
    lines = err.strip().splitlines()
    assert (
        status == 2
        and heavy == []
        and len(lines) == 1
        and "Unknown key(s)" in lines[0]
        and "not_an_option" in lines[0]
    )


@pytest.mark.parametrize(
    "code",
    [
        # the package first, then transformers
        "import cpfcte_hf\nfrom transformers import AutoConfig",
        # transformers first, then the package
        "import transformers\nimport cpfcte_hf\nfrom transformers import AutoConfig",
        # a model file first (it imports transformers while it runs)
        "from cpfcte_hf.models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation\n"
        "from transformers import AutoConfig",
        # a name of the package
        "import cpfcte_hf\nassert cpfcte_hf.CPFCTEConfig.model_type == 'cpfcte'\nfrom transformers import AutoConfig",
    ],
    ids=["package-first", "transformers-first", "model-file-first", "attribute"],
)
def test_the_models_and_pipelines_register_whatever_is_imported_first(code):
    result = run_python(
        code
        + "\nfrom transformers.pipelines import PIPELINE_REGISTRY"
        + "\nprint(AutoConfig.for_model('cpfcte').model_type, AutoConfig.for_model('deeplab_v2').model_type,"
        + " 'weakly-supervised-pseudo-labelling' in PIPELINE_REGISTRY.get_supported_tasks())"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["cpfcte", "deeplab_v2", "True"]
