"""Ctrl-C and SIGTERM in the middle of a training, on real processes: `cpfcte-hf train` ends with one line and exit
status 130 instead of a traceback; `cpfcte-hf run` stops at the step at work (no step after it, not even the ones
whose failure a run survives), writes its summary, exits 130 / 143 and leaves no process; the same command resumes.
(The label step's own signal handling: test_pseudo_labeling_signals.)"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpfcte_hf.utils.interrupts import Interrupted, interrupting_signal
from cpfcte_hf.workflows import cells
from cpfcte_hf.workflows.run_results import failure_line, run_exit_status
from tests.test_demo import TINY_PRESET
from tests.utils import subprocess_env


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc"),
]

REPO = Path(__file__).resolve().parents[1]


def session_members(session: int) -> list[int]:
    """Live (not zombie) processes of the session `session`: what a command started with `start` left running, even
    after it has exited itself (its orphans keep its session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == session:
                found.append(int(entry))
    return found


def start(command: list[str], log: Path) -> subprocess.Popen:
    """`command` in a session of its own (so that a signal to its group reaches it as Ctrl-C would), output to `log`."""
    stream = log.open("w")
    return subprocess.Popen(
        command, stdout=stream, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=REPO, start_new_session=True
    )


def wait_for_text(log: Path, text: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        assert process.poll() is None, f"ended ({process.returncode}) before {text!r}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no {text!r} within {timeout} s:\n{log.read_text()[-3000:]}")


def tiny_preset(tmp_path: Path, stage1_steps: int) -> Path:
    """test_demo's tiny demo, its stage 1 long enough to be stopped in the middle (a checkpoint every 3 steps)."""
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET.replace("max_steps: 4\n", f"max_steps: {stage1_steps}\n", 1))
    return preset


def test_a_stopped_training_command_ends_with_one_line_and_exit_status_130(tmp_path):
    preset = tiny_preset(tmp_path, 100_000)
    data = tmp_path / "data"
    from cpfcte_hf.data.shapes import write_shapes_voc

    write_shapes_voc(str(data), num_train=24, num_val=6, image_size=32)
    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "cpfcte_hf", "train", "--config", str(preset), "--data_root", str(data)]
    process = start([*command, "--output_dir", str(tmp_path / "out")], log)
    wait_for_text(log, "'loss'", process)  # in the middle of the training loop
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert process.wait(timeout=60) == 130
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("cpfcte-hf train: interrupted by SIGINT (exit status 130): its complete checkpoints")
    assert "--resume_from_checkpoint last" in last


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM to the process"])
def test_a_stopped_run_stops_at_its_step_writes_its_summary_and_resumes(tmp_path, how):
    preset = tiny_preset(tmp_path, 300)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "cpfcte_hf", "run", "--config", str(preset), "--output_dir", str(out),
        "--crf_workers", "0",
    ]  # fmt: skip
    log = tmp_path / "run.log"
    process = start(command, log)
    wait_for_text(log, "=== [run] stage1:", process)
    deadline = time.monotonic() + 300  # a complete checkpoint, so that the rerun has one to resume from
    while not list((out / "stage1").glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    if how == "SIGTERM to the process":  # a scheduler, `docker stop`, torchrun passing it on
        process.send_signal(signal.SIGTERM)
        expected = 143
    else:
        os.killpg(process.pid, signal.SIGINT)
        expected = 130
    assert process.wait(timeout=60) == expected, log.read_text()[-3000:]
    assert session_members(process.pid) == []  # start_new_session: the session's id is the command's pid
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    name = signal.Signals(expected - 128).name
    assert f"cpfcte-hf train: interrupted by {name} (exit status {expected})" in text
    assert text.strip().splitlines()[-1] == (
        f"error: the run was interrupted at step stage1 (exit status {expected}). The same command resumes: "
        "finished steps are skipped, a training continues from its last complete checkpoint."
    )
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "interrupted at stage1"
    assert {name: entry["status"] for name, entry in summary["steps"].items()} == {
        "data": "ran",
        "stage1": "interrupted",
    }
    assert json.loads((out / "stage1.step.json").read_text())["status"] == "started"
    assert not (out / "pseudo_labels").exists() and not (out / "hub").exists()

    rerun = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "--resume_from_checkpoint last ===" in rerun.stdout  # the step's line says it resumes
    first_log = next(line for line in rerun.stdout.splitlines() if line.startswith("{'loss'"))
    assert float(first_log.split("'epoch': '")[1].split("'")[0]) > 1  # after the checkpoint's steps, not from 0
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["steps"]["data"]["status"] == "skipped" and summary["steps"]["stage1"]["status"] == "ran"
    assert json.loads((out / "stage1" / "trainer_state.json").read_text())["global_step"] == 300


def test_the_exit_status_of_an_interrupted_command_names_its_signal():
    assert interrupting_signal(130) == signal.SIGINT and interrupting_signal(143) == signal.SIGTERM
    assert interrupting_signal(3) is None and interrupting_signal(1) is None and interrupting_signal(0) is None
    interrupted = {
        "status": "interrupted at stage2",
        "steps": {"stage2": {"status": "interrupted", "exit_status": 143}},
    }
    failed = {"status": "failed at stage2", "steps": {"stage2": {"status": "failed", "exit_status": 1}}}
    survived = {"status": "complete", "steps": {"hub": {"status": "failed", "exit_status": 1}}}
    assert [run_exit_status(summary) for summary in (interrupted, failed, survived)] == [143, 3, 0]
    assert "interrupted at step stage2 (exit status 143)" in failure_line(interrupted)
    assert "stopped at step stage2 (exit status 1; its error is above)" in failure_line(failed)
    assert failure_line(survived) is None


def test_reproduce_stops_at_an_interrupted_step_of_a_cell(tmp_path, monkeypatch):
    """A cell's step that ended with 130 stops `reproduce` (an Interrupted with that status), where a failed one
    raises StepFailed (exit status 3)."""
    runner = type("Runner", (), {"output_dir": tmp_path, "overwrite": False, "reused": [], "ran": []})()
    cell = cells.Cell.__new__(cells.Cell)
    cell.runner, cell.directory, cell.commands, cell.fingerprints = runner, tmp_path / "cell", [], {}
    monkeypatch.setattr(cells, "step_settings", lambda command, argv, run_dir: {})
    argv = ["--output_dir", str(tmp_path / "cell" / "train")]
    for status, exit_status in (("interrupted", 130), ("failed", 1)):
        entry = {"status": status, "exit_status": exit_status}
        monkeypatch.setattr(cells, "execute", lambda *a, entry=entry, **k: dict(entry))
        with pytest.raises(Interrupted if status == "interrupted" else cells.StepFailed) as raised:
            cell._run("train", "train", argv, ["config.json"], ())
        if status == "interrupted":
            assert raised.value.exit_code == 130 and "in step cell/train" in str(raised.value)
    assert runner.ran == [] and runner.reused == []
