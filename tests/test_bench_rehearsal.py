"""`cpfcte-hf bench rehearsal`: the tree and its lists per size, the per-image CPU costs, and the launch monitor
(steps cut from the run's log lines, SIGKILL of every process of a launch, ranks in sessions of their own included)."""

import argparse
import json
import os
import signal
import sys

from cpfcte_hf.benchmarks.rehearsal import cpu_costs, launch, prepare_tree, val_count
from cpfcte_hf.data.rehearsal import VOC_DIR


def test_trees_grow_and_each_size_reads_its_first_images(tmp_path):
    args = argparse.Namespace(data_root=str(tmp_path / "data"), work_dir=str(tmp_path), seed=0, generator_workers=0)
    root, summary = prepare_tree(args, 2)
    lists = root / VOC_DIR / "ImageSets" / "Segmentation"
    assert summary["splits"]["train_aug"] == 2 and (lists / "train_aug_2.txt").read_text().split() == [
        "2010_000000",
        "2010_000001",
    ]
    root, summary = prepare_tree(args, 4)  # grows the same tree
    assert (summary["written"], summary["found_done"]) == (2, 3)
    assert len((lists / "train_aug_4.txt").read_text().split()) == 4 and val_count(4) == 1
    costs = cpu_costs(root, 2)
    assert costs["images"] == 2 and all(value > 0 for value in costs["cpu_seconds_per_image"].values())


STEPS_SCRIPT = """
import subprocess, sys, time
print("=== [run] stage1: cpfcte-hf train ===", flush=True)
time.sleep(1.5)
print("=== [run] stage1: 1.5 s, exit status 0 ===", flush=True)
print("=== [run] pseudo_labels: cpfcte-hf label ===", flush=True)
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
"""


def test_launch_measures_each_step_and_kill_leaves_no_process(tmp_path):
    script, pid_file = tmp_path / "steps.py", tmp_path / "child.pid"
    script.write_text(STEPS_SCRIPT)
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "model.bin").write_bytes(b"0" * 1000)
    result = launch(
        [sys.executable, str(script), str(pid_file)],
        tmp_path,
        tmp_path / "cache",
        tmp_path / "log.txt",
        kill_when=lambda monitor: pid_file.is_file() and monitor.current is not None,
    )
    assert result["killed"] and result["exit_status"] == -9
    first, second = result["steps"]
    assert (first["step"], first["seconds_reported"], first["exit_status"]) == ("stage1", 1.5, 0)
    assert first["folder_bytes"] == 1000
    assert second["step"] == "pseudo_labels" and second["exit_status"] is None  # killed inside it
    child = int(pid_file.read_text())  # in a session of its own, as torchrun's ranks are: killed too
    try:
        assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
    finally:
        if os.path.exists(f"/proc/{child}"):
            os.kill(child, signal.SIGKILL)
    assert "=== [run] stage1: 1.5 s" in (tmp_path / "log.txt").read_text()
    json.dumps(result)
