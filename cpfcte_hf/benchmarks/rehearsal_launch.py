# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""One measured launch of the VOC-scale rehearsal (`rehearsal`): the command line, the launch in its own session,
and a monitor that samples /proc for every process of the launch and cuts the samples by the run's steps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


REHEARSAL_OVERRIDES = [
    "backbone=",  # no Hub: a random ViT built from the fields below
    "patch_size=16",
    "hidden_size=192",
    "num_hidden_layers=2",
    "num_attention_heads=3",
    "intermediate_size=384",
    "lstm_hidden_size=48",  # 4 x 48 = 192, as the preset's 4 x 192 = 768
    "trainable_encoder_blocks=-1",  # the preset's 5 needs at least 5 blocks
    "bf16=false",
    "max_steps=8",
    "train_deeplab.backbone=none",  # stage 2's encoder shrunk too: a random ResNet of 4 basic blocks, 32-256 wide
    "train_deeplab.resnet_layer_type=basic",
    "train_deeplab.resnet_depths=[1,1,1,1]",
    "train_deeplab.resnet_hidden_sizes=[32,64,128,256]",
    "train_deeplab.resnet_embedding_size=32",
    "train_deeplab.max_steps=4",
    "train_deeplab.save_steps=2",
]
STEP_LINE = re.compile(r"^=== \[run\] (\w+): (.*) ===$")
END_LINE = re.compile(r"^([\d.]+) s, exit status (-?\d+)$")
STEP_FOLDERS = {
    "stage1": "stage1",
    "pseudo_labels": "pseudo_labels",
    "stage2": "stage2",
    "eval_stage1_tagged": "eval/stage1_tagged",
    "eval_stage1_untagged": "eval/stage1_untagged",
    "eval_stage2": "eval/stage2",
    "hub": "hub",
}


# ------------------------------------------------------------------------------------------------ /proc sampling


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children, found, todo = children if children is not None else _children_map(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _status(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return values


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _pss(pid: int) -> int:
    """Proportional set size: shared pages split between the processes that share them (sums to the real total)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def folder_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class LaunchMonitor:
    """Samples the RSS of every process under `pid` every `interval` s and cuts the samples by the run's steps."""

    def __init__(self, pid: int, run_dir: Path, cache_dir: Path, interval: float = 1.0, pss_every: int = 5):
        self.pid, self.run_dir, self.cache_dir, self.interval = pid, run_dir, cache_dir, interval
        self.pss_every, self.samples = pss_every, 0
        self.steps: list[dict] = []
        self.current: dict | None = None
        self.seen: set[int] = set()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            self.samples += 1
            with_pss = self.samples % self.pss_every == 0  # reading PSS walks page tables: not every sample
            children = _children_map()
            ranks = set(children.get(self.pid, []))  # the launcher's children; their own children are helpers
            pids = [pid for pid in descendants(self.pid, children) if pid != self.pid]
            total = 0
            with self.lock:
                step = self.current
                self.seen.update(pids)
                for pid in pids:
                    cpu = _cpu_seconds(pid)
                    if cpu is not None:
                        if step is not None:
                            step["cpu_seconds"] += (
                                cpu - step["cpu_at_start"].get(pid, 0.0) - step["cpu_counted"].get(pid, 0.0)
                            )
                            step["cpu_counted"][pid] = cpu - step["cpu_at_start"].get(pid, 0.0)
                        self.cpu[pid] = cpu
                    status = _status(pid)
                    rss, hwm = status.get("VmRSS", 0), status.get("VmHWM", 0)
                    total += _pss(pid) if with_pss else 0
                    if step is None:
                        continue
                    peak = max(rss, hwm if pid in step["reset"] else rss)
                    bucket = step["rank_peaks"] if pid in ranks else step["helper_peaks"]
                    bucket[pid] = max(bucket.get(pid, 0), peak)
                if step is not None and with_pss:
                    step["total_pss_peak"] = max(step["total_pss_peak"], total)

    def step_started(self, name: str) -> None:
        with self.lock:
            reset = set()
            for pid in descendants(self.pid)[1:]:
                try:
                    with open(f"/proc/{pid}/clear_refs", "w") as handle:
                        handle.write("5")  # resets VmHWM to the current RSS
                    reset.add(pid)
                except OSError:
                    pass
            self.current = {
                "step": name,
                "start": time.time(),
                "reset": reset,
                "rank_peaks": {},
                "helper_peaks": {},
                "total_pss_peak": 0,
                "cpu_seconds": 0.0,
                "cpu_at_start": dict(self.cpu),
                "cpu_counted": {},
                "cache_bytes_before": folder_bytes(self.cache_dir),
            }

    def step_ended(self, seconds: float | None, status: int | None) -> None:
        with self.lock:
            step, self.current = self.current, None
        if step is None:
            return
        folder = self.run_dir / STEP_FOLDERS.get(step["step"], step["step"])
        cache_after = folder_bytes(self.cache_dir)
        self.steps.append(
            {
                "step": step["step"],
                "exit_status": status,
                "seconds_wall": round(time.time() - step["start"], 2),
                "seconds_reported": seconds,
                "rank_peak_rss_bytes": sorted(step["rank_peaks"].values(), reverse=True),
                "helper_peak_rss_bytes": sorted(step["helper_peaks"].values(), reverse=True)[:4],
                "helper_processes": len(step["helper_peaks"]),
                "largest_helper_peak_rss_bytes": max(step["helper_peaks"].values(), default=0),
                "total_pss_peak_bytes": step["total_pss_peak"],
                "cpu_seconds": round(step["cpu_seconds"], 1),
                "folder_bytes": folder_bytes(folder),
                "arrow_cache_bytes": cache_after,
                "arrow_cache_growth_bytes": cache_after - step["cache_bytes_before"],
            }
        )

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------------------------------ one launch


def run_command_line(tree: Path, run_dir: Path, cache_dir: Path, size: int, args, steps=()) -> list[str]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", str(args.processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cpfcte_hf", "run", "--config", "voc",
               "--data_root", str(tree), "--train_split", f"train_aug_{size}", "--eval_split", f"val_{size}",
               "--output_dir", str(run_dir), "--cache_dir", str(cache_dir),
               "--override", *REHEARSAL_OVERRIDES, *args.override]  # fmt: skip
    if steps:
        command += ["--steps", *steps]
    return command


def launch(command: list[str], run_dir: Path, cache_dir: Path, log_path: Path, kill_when=None) -> dict:
    """Runs `command` in its own session, measured; `kill_when(monitor)` -> True kills the whole launch (SIGKILL)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        monitor = LaunchMonitor(process.pid, run_dir, cache_dir)
        killed = threading.Event()

        def watch() -> None:
            while process.poll() is None and not killed.is_set():
                if kill_when is not None and kill_when(monitor):
                    # every process of the launch: torchrun starts each rank in a session of its own, so killing
                    # the launcher's group would leave the ranks running
                    for pid in reversed(descendants(process.pid)):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    killed.set()
                    return
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for line in process.stdout:
            log.write(line)
            match = STEP_LINE.match(line.strip())
            if match:
                ended = END_LINE.match(match.group(2))
                if ended:
                    monitor.step_ended(float(ended.group(1)), int(ended.group(2)))
                else:
                    monitor.step_started(match.group(1))
        process.wait()
        watcher.join()
    if monitor.current is not None:  # killed (or failed) inside a step
        monitor.step_ended(None, None)
    monitor.close()
    time.sleep(1.0)
    leftovers = [pid for pid in sorted(monitor.seen) if _alive(pid)]
    return {
        "exit_status": process.returncode,
        "killed": killed.is_set(),
        "seconds": round(time.time() - start, 2),
        "steps": monitor.steps,
        "processes_left_behind": leftovers,
    }


def _alive(pid: int) -> bool:
    """A process of the launch still running (not a zombie, and still ours: its command line names the package)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return state != "Z" and b"cpfcte_hf" in handle.read()
    except OSError:
        return False
