"""A real `scripts/pseudo_label.py` process with a pool of 2 CRF workers, killed: the workers never outlive it,
SIGTERM stops it with exactly one line and exit status 143, and a rerun resumes; a second run into the same
directory is refused, and the lock of a killed run is taken over."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from .data_trees import write_voc_tree
from .utils import PYTHON, save_tiny_checkpoint, subprocess_env


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc"),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Arguments of a pseudo-labelling run whose CRF takes about 2 s per image (many mean-field iterations)."""
    root = tmp_path_factory.mktemp("signals")
    save_tiny_checkpoint(root / "model", classifier_init_std=50.0)
    tree = write_voc_tree(root / "voc", splits={"train_aug": 4}, class_names=CLASS_NAMES)
    arguments = [
        os.path.join(REPO, "scripts", "pseudo_label.py"),
        "--model", str(root / "model"),
        "--dataset", "voc",
        "--data-root", tree["root"],
        "--split", "train_aug",
        "--dataset-option", f"cache_dir={root / 'cache'}",
        "--size", "32",
        "--crf-workers", "2",
        "--crf-iterations", "3000",
        "--num-overlays", "0",
        "--no-progress",
    ]  # fmt: skip
    return {"arguments": arguments, "ids": tree["ids"]["train_aug"]}


def masks_in(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".png") and not n.startswith(".tmp-"))


def start(job, out):
    env = subprocess_env()
    env["PYTHONPATH"] = REPO
    return subprocess.Popen(
        [PYTHON, *job["arguments"], "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def workers_of(process) -> list[int]:
    """The CRF workers of `process` once the pool has started (forked: same command line as the parent)."""
    with open(f"/proc/{process.pid}/cmdline", "rb") as stream:
        command = stream.read()

    def same_command(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                return stream.read() == command
        except OSError:
            return False

    return [pid for pid in children(process.pid) if same_command(pid)]


def test_sigkill_of_the_main_process_takes_the_crf_workers_with_it(tmp_path, job):
    process = start(job, tmp_path / "out")
    descendants = []
    try:
        workers = wait_for(lambda: len(workers_of(process)) >= 2 and workers_of(process), timeout=120)
        assert workers and len(workers) == 2, f"the pool did not start: {process.poll()} {process.stderr.read()}"
        descendants = children(process.pid)
        assert process.poll() is None, "the run finished before it could be killed: make the CRF slower"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        left = wait_for(lambda: not any(alive(pid) for pid in descendants), timeout=5) or [
            pid for pid in descendants if alive(pid)
        ]
        assert left is True, f"processes outlived their killed parent: {left}"
    finally:
        if process.poll() is None:
            process.kill()
        for pid in descendants:  # on failure: no orphan left running on the test machine
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_with_one_line_and_a_rerun_resumes(tmp_path, job):
    out = tmp_path / "out"
    process = start(job, out)
    workers = []
    try:
        assert wait_for(lambda: len(workers_of(process)) >= 2, timeout=120)
        workers = workers_of(process)
        crf_dir = out / "crf"
        assert wait_for(lambda: crf_dir.is_dir() and masks_in(crf_dir), 60)
        assert process.poll() is None, "the run finished before it could be stopped: make the CRF slower"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        if process.poll() is None or process.returncode != 143:  # on failure: no orphan left running
            for pid in workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 143
    # Before the run, transformers and datasets draw their loading bars ("Loading weights", "Generating ...
    # split"); after them, the interruption is one line.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert all(re.search(r"(it|examples)/s\]$", line) for line in lines[:-1]), stderr
    assert lines[-1].startswith("interrupted by SIGTERM (exit status 143): the masks in") and "resume" in lines[-1]
    assert wait_for(lambda: not any(alive(pid) for pid in workers), timeout=5), "CRF workers outlived the run"
    leftovers = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names if n.startswith(".tmp-")]
    assert leftovers == []
    assert not (out / "summary.json").exists()  # a summary only describes a finished run
    done = masks_in(crf_dir)
    assert 1 <= len(done) < len(job["ids"])

    rerun = start(job, out)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"{len(job['ids']) - len(done)} written, {len(done)} already done, 0 failed" in stdout
    assert sorted(os.listdir(crf_dir)) == sorted(f"{i}.png" for i in job["ids"])


# ------------------------------------------------------------------ a fast CRF: the workers wait between images


@pytest.fixture(scope="module")
def quick_job(tmp_path_factory):
    """`cpfcte-hf label` of 60 small images with the default CRF: the 2 workers spend most of the run idle, waiting
    for the next image (where a signal used to make each of them print a traceback)."""
    root = tmp_path_factory.mktemp("quick")
    save_tiny_checkpoint(root / "model", classifier_init_std=50.0)
    tree = write_voc_tree(root / "voc", splits={"train_aug": 60}, class_names=CLASS_NAMES)
    arguments = [
        "-m", "cpfcte_hf", "label",
        "--model", str(root / "model"),
        "--dataset", "voc",
        "--data_root", tree["root"],
        "--split", "train_aug",
        "--dataset_option", f"cache_dir={root / 'cache'}",
        "--size", "32",
        "--crf_workers", "2",
        "--num_overlays", "0",
        "--no_progress",
    ]  # fmt: skip
    return {"arguments": arguments, "ids": tree["ids"]["train_aug"]}


def start_logged(job, out, log):
    """Starts the job in its own session, stdout and stderr into files (what it printed when is known exactly)."""
    env = subprocess_env()
    env["PYTHONPATH"] = REPO
    return subprocess.Popen(
        [PYTHON, *job["arguments"], "--output_dir", str(out)],
        env=env,
        stdout=open(f"{log}.out", "wb"),
        stderr=open(f"{log}.err", "wb"),
        start_new_session=True,
    )


def stop_after_some_masks(process, out, count=2):
    """Waits until `count` CRF masks exist, then stops the process (SIGSTOP): it cannot finish before the test acts."""
    assert wait_for(lambda: (out / "crf").is_dir() and len(masks_in(out / "crf")) >= count, 120), process.poll()
    process.send_signal(signal.SIGSTOP)
    assert process.poll() is None, "the run finished before it could be stopped"


def printed_since(log, offsets=(0, 0)) -> tuple[str, str]:
    return tuple(open(f"{log}.{kind}", "rb").read()[offset:].decode() for kind, offset in zip(("out", "err"), offsets))


def log_sizes(log) -> tuple[int, int]:
    return os.path.getsize(f"{log}.out"), os.path.getsize(f"{log}.err")


@pytest.mark.parametrize("to_group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_prints_exactly_the_documented_line(tmp_path, quick_job, to_group):
    """What a run prints after SIGTERM, sent to it (`kill PID`) or to its whole process group (`kill -- -PGID`, a
    job scheduler), is the one line of the README's "Stopping", nothing else: the CRF workers stay quiet."""
    out, log = tmp_path / "out", tmp_path / "log"
    process = start_logged(quick_job, out, log)
    try:
        stop_after_some_masks(process, out)
        offsets = log_sizes(log)
        if to_group:
            os.killpg(process.pid, signal.SIGTERM)
            os.killpg(process.pid, signal.SIGCONT)
        else:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143
    assert printed_since(log, offsets) == (
        "",
        f"interrupted by SIGTERM (exit status 143): the masks in {out} are all complete; rerun the same command to "
        "resume.\n",
    )


def test_a_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, quick_job):
    """Two real `label` processes into one directory: the second stops at once, naming the first (pid, host, start,
    command); once the first is SIGKILLed, the next run takes its directory over with one log line and finishes it,
    keeping the masks the first completed."""
    out = tmp_path / "out"
    first = start_logged(quick_job, out, tmp_path / "first")
    try:
        stop_after_some_masks(first, out)
        kept = {name: (out / "crf" / name).read_bytes() for name in masks_in(out / "crf")}
        second = start_logged(quick_job, out, tmp_path / "second")
        assert second.wait(timeout=120) == 2
        stdout, stderr = printed_since(tmp_path / "second")
        host = socket.gethostname()
        assert stdout == "" and re.fullmatch(
            rf"error: {out} is in use by another run \(pid {first.pid} on {re.escape(host)}, started [0-9T:+-]+: "
            rf"python[0-9.]* -m cpfcte_hf label --model {quick_job['arguments'][4]} .*\); wait for it to end, or choose "
            r"another output directory\.\n",
            stderr,
        ), stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)

    third = start_logged(quick_job, out, tmp_path / "third")
    assert third.wait(timeout=300) == 0, printed_since(tmp_path / "third")
    stdout, stderr = printed_since(tmp_path / "third")
    assert f"{out}: taking over from a run that was stopped without releasing it (pid {first.pid} on {host}" in stderr
    total = len(quick_job["ids"])
    assert f"{total} image(s): {total - len(kept)} written, {len(kept)} already done, 0 failed" in stdout
    assert masks_in(out / "crf") == sorted(f"{i}.png" for i in quick_job["ids"])
    assert {name: (out / "crf" / name).read_bytes() for name in kept} == kept
    assert sorted(json.loads((out / "sources.json").read_text())["images"]) == sorted(quick_job["ids"])
    assert not [name for name in os.listdir(out) if name.startswith((".cpfcte-hf.lock", ".sources-"))]
