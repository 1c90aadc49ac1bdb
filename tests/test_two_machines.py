"""Two machines sharing one output directory: `accelerate launch --num_machines 2 --machine_rank {0,1}`, both launches
on this machine (127.0.0.1), one process each, give the same results as 2 processes on one machine.

The reference is `run` on one machine with 2 processes; on "two machines" run `run`, then `train`, `label` and
`train-deeplab` one by one with the settings that run resolved (its run_preset.yaml). Weights and masks must be
identical byte for byte, the reports' numbers equal, and every image labelled once across the machines.
"""

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_demo import TINY_PRESET
from .utils import free_port, subprocess_env


REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
COMMON = ["--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--num_processes", "2"]


def one_machine(argv: list[str]) -> subprocess.CompletedProcess:
    command = [ACCELERATE, "launch", *COMMON, "--num_machines", "1", "--main_process_port", str(free_port())]
    result = subprocess.run(
        [*command, "-m", "cpfcte_hf", *argv],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def two_machines(argv: list[str]) -> list[str]:
    """The two machines' launches of `cpfcte-hf <argv>`, started together; both must succeed. Their stdouts."""
    port = str(free_port())
    launches = [
        subprocess.Popen(
            [
                ACCELERATE,
                "launch",
                *COMMON,
                "--num_machines",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "-m",
                "cpfcte_hf",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=REPO,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = []
    for rank, launch in enumerate(launches):
        try:
            stdout, stderr = launch.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for other in launches:
                other.kill()
            raise
        assert launch.returncode == 0, f"machine {rank}: " + stdout[-3000:] + stderr[-3000:]
        outputs.append(stdout)
    return outputs


def same_files(first: Path, second: Path, pattern: str) -> int:
    """The files matching `pattern` under both folders are the same names with the same bytes; their count."""
    names = sorted(str(p.relative_to(first)) for p in first.glob(pattern))
    assert names == sorted(str(p.relative_to(second)) for p in second.glob(pattern))
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    return len(names)


def mean_ious(report: Path) -> dict:
    return {name: entry["mean_iou"] for name, entry in json.loads(report.read_text())["predictions"].items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("machines")
    preset = root / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    one = root / "one_machine"
    one_machine(["run", "--config", str(preset), "--output_dir", str(one), "--crf_workers", "0"])
    two = root / "two_machines"
    stdouts = two_machines(["run", "--config", str(preset), "--output_dir", str(two), "--crf_workers", "0"])
    return root, one, two, stdouts


STAGE_FILES = {
    "stage1": "model.safetensors",
    "stage2": "model.safetensors",
    "pseudo_labels": "crf/*.png",
    "eval/stage1_tagged": "crf/*.png",
    "eval/stage2": "predictions/val/ms/*.png",
}


def test_run_on_two_machines_gives_the_results_of_two_processes_on_one(runs):
    _, one, two, stdouts = runs
    summaries = [json.loads((folder / "run_summary.json").read_text()) for folder in (one, two)]
    assert [s["status"] for s in summaries] == ["complete", "complete"]
    assert summaries[0]["mean_iou"] == summaries[1]["mean_iou"]
    # The same settings, step by step (paths inside the run are written $RUN in the fingerprints).
    assert {k: v["fingerprint"] for k, v in summaries[0]["steps"].items()} == {
        k: v["fingerprint"] for k, v in summaries[1]["steps"].items()
    }
    for folder, pattern in STAGE_FILES.items():
        assert same_files(one / folder, two / folder, pattern) > 0, folder
    assert mean_ious(one / "stage2/predictions/val/report/metrics.json") == mean_ious(
        two / "stage2/predictions/val/report/metrics.json"
    )
    labelled = json.loads((two / "pseudo_labels" / "summary.json").read_text())
    assert labelled["written"] == 24 and labelled["written_per_process"] == [12, 12]
    # The run's own log and files come from the global main process only (machine 0), not from each machine's.
    assert "=== [run] stage1: " in stdouts[0] and "=== [run] stage1: " not in stdouts[1]
    assert "Dry run: nothing pushed" in stdouts[0] and "Dry run: nothing pushed" not in stdouts[1]


def test_train_label_and_train_deeplab_on_two_machines(runs):
    """The commands one by one on two machines, with the settings `run` resolved: the same weights and masks."""
    root, one, _, _ = runs
    config = ["--config", str(one / "run_preset.yaml")]
    out = root / "commands"
    two_machines(["train", *config, "--output_dir", str(out / "stage1")])
    same_files(one / "stage1", out / "stage1", "model.safetensors")
    two_machines(
        ["label", *config, "--model", str(out / "stage1"), "--split", "train", "--output_dir", str(out / "pseudo"),
         "--no_progress", "--crf_workers", "0"]
    )  # fmt: skip
    assert same_files(one / "pseudo_labels", out / "pseudo", "bpm/*.png") == 24
    assert same_files(one / "pseudo_labels", out / "pseudo", "crf/*.png") == 24
    assert mean_ious(one / "pseudo_labels/report/metrics.json") == mean_ious(out / "pseudo/report/metrics.json")
    two_machines(
        ["train-deeplab", *config, "--pseudo_labels", str(out / "pseudo"), "--output_dir", str(out / "stage2"),
         "--crf_workers", "0"]
    )  # fmt: skip
    same_files(one / "stage2", out / "stage2", "model.safetensors")
    same_files(one / "stage2", out / "stage2", "predictions/val/ms*/*.png")
    report = "predictions/val/report/metrics.json"
    assert mean_ious(one / "stage2" / report) == mean_ious(out / "stage2" / report)
