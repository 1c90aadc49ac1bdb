# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""The VOC-scale rehearsal: `cpfcte-hf run --config voc` on the generated VOC stand-in, measured step by step.

    cpfcte-hf bench rehearsal --sizes 1000 --output outputs/rehearsal/bench_1k.json          # the whole run
    cpfcte-hf bench rehearsal --sizes 200 --steps stage1 pseudo_labels                        # the label rate
    cpfcte-hf bench rehearsal --sizes 3000 10582 --steps stage1                               # data + stage 1
    cpfcte-hf bench rehearsal --sizes 1000 --kill_check                                       # kill -9, resume

For each size N it makes, completes or grows the rehearsal tree of `cpfcte-hf make-voc-rehearsal` (--data_root,
default WORK/data; one tree for every size) to at least N `train_aug` and round(N x 1449/10582) `val` images, writes
`train_aug_N` / `val_N` lists of its first images next to VOC's, then launches, as a user would,

    accelerate launch --multi_gpu --num_processes P -m cpfcte_hf run --config voc --data_root TREE \
        --train_split train_aug_N --eval_split val_N --cache_dir WORK/cache_N --override <REHEARSAL_OVERRIDES>

`REHEARSAL_OVERRIDES` shrink only the encoders (stage 1: a random ViT 192 wide, 2 blocks, 16-px patches instead of
ViT-B/16 from the Hub; stage 2: a random 4-block ResNet 32-256 wide instead of ResNet-101) and cut the training
steps (8 and 4); bf16 is off (no CPU support here). Everything else is the `voc` preset's: sizes (384, 960, 321),
batches, augmentation, the CRF, multi-scale testing. `--override` adds more. (With ResNet-101 itself, 10 images per
process on 2 processes was killed for memory on this 24 GiB machine, and its 3-scale test on this shared 2-core
machine would take most of an hour at 1,000 images; the projection takes its cost from its FLOPs instead.) While the run goes, every second it reads /proc for every process of the
launch (the two ranks, their data-loader and CRF workers) and, per step (from the run's `=== [run] step` lines):
wall time, images/s, peak RSS of each rank and of the largest helper processes, the largest total PSS of the launch (shared pages
counted once; read every 5 s),
bytes written in the step's folder, and the growth of the Arrow cache folder. A rank's peak is per step: its
high-water mark is reset (`/proc/PID/clear_refs`) when a step starts.

`--kill_check` (one size) then makes a second run in another folder that starts from the first run's stage-1
checkpoint, kills the whole launch with SIGKILL when half the pseudo-labels are written, runs the same command again,
kills it again when stage 2 has saved its first checkpoint (`train_deeplab.save_steps` is set to half the steps in
both runs), runs it again to the end, and compares: every pseudo-label mask byte for byte, stage 2's metrics and
weights. Prints one JSON object (and writes it to --output).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from ..data.rehearsal import VOC_DIR, VOC_TRAIN_AUG_IMAGES, VOC_VAL_IMAGES, write_voc_rehearsal
from ..utils.arguments import parse_plain_args
from .common import machine_description, report_results


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


# ------------------------------------------------------------------------------------------------ data


def val_count(size: int) -> int:
    return max(1, round(size * VOC_VAL_IMAGES / VOC_TRAIN_AUG_IMAGES))


def prepare_tree(args, size: int) -> tuple[Path, dict]:
    """The tree for `size`, made, completed or grown (`--data_root`, else WORK/data), with `train_aug_<size>` and
    `val_<size>` lists of its first images."""
    root = Path(args.data_root or Path(args.work_dir) / "data")
    train, val = size, val_count(size)
    if (root / "rehearsal.json").is_file():  # keep what the tree has: smaller sizes read its first images
        splits = json.loads((root / "rehearsal.json").read_text())["splits"]
        train, val = max(train, splits["train_aug"]), max(val, splits["val"])
    workers = getattr(args, "generator_workers", None)
    summary = write_voc_rehearsal(str(root), train_images=train, val_images=val, seed=args.seed, num_workers=workers)
    _write_lists(root, size)
    return root, summary


def _write_lists(root: Path, size: int) -> None:
    lists = root / VOC_DIR / "ImageSets" / "Segmentation"
    for name, count in (("train_aug", size), ("val", val_count(size))):
        ids = (lists / f"{name}.txt").read_text().split()[:count]
        (lists / f"{name}_{size}.txt").write_text("\n".join(ids) + "\n")


# ------------------------------------------------------------------------------------------------ the kill check


def _count_pngs(folder: Path) -> int:
    return len(list(folder.glob("*.png"))) if folder.is_dir() else 0


def kill_check(args, size: int, tree: Path, first: Path, cache_dir: Path, log_path: Path) -> dict:
    """Kill -9 in the label pass and in stage 2, resume, and compare with the uninterrupted run `first` (see the
    module docstring). With `--kill_check_images N` below the size, the killed run labels the first N images with
    `first`'s stage-1 model (their masks are compared with `first`'s masks of those images), and an uninterrupted
    stage 2 on a copy of its pseudo-labels is the stage-2 reference."""
    images = args.kill_check_images or size
    second = Path(args.work_dir) / f"run_{size}_killed_{images}{'_stage2' if args.kill_check_stage2_only else ''}"
    shutil.rmtree(second, ignore_errors=True)
    second.mkdir(parents=True)
    shutil.copytree(first / "stage1", second / "stage1")  # same stage 1: the check is about the later steps
    if images == size:
        shutil.copy(first / "stage1.step.json", second / "stage1.step.json")  # skipped as done
        steps = ("stage1", "pseudo_labels", "stage2")
    else:
        _write_lists(tree, images)
        steps = ("pseudo_labels", "stage2")  # stage 1 is read from its folder
    if args.kill_check_label_only:
        steps = steps[:-1]  # no stage 2
    if args.kill_check_stage2_only:  # the uninterrupted run's pseudo-labels, as done: only stage 2 is killed
        shutil.copytree(first / "pseudo_labels", second / "pseudo_labels")
        shutil.copy(first / "pseudo_labels.step.json", second / "pseudo_labels.step.json")
        if images == size:
            steps = ("stage1", "pseudo_labels", "stage2")
    command = run_command_line(tree, second, cache_dir, images, args, steps)
    attempts = [
        ("killed in pseudo_labels", lambda m: _count_pngs(second / "pseudo_labels" / "crf") >= images // 2),
        (
            "killed in stage2",
            lambda m: (
                any(path.is_dir() for path in (second / "stage2").glob("checkpoint-*"))
                and m.current is not None
                and m.current["step"] == "stage2"
            ),
        ),
        ("resumed to the end", None),
    ]
    if args.kill_check_label_only:
        del attempts[1]
    if args.kill_check_stage2_only:
        del attempts[0]
    launches = []
    for label, kill_when in attempts:
        result = launch(command, second, cache_dir, log_path, kill_when)
        launches.append(
            {
                "what": label,
                "killed": result["killed"],
                "exit_status": result["exit_status"],
                "seconds": result["seconds"],
                "crf_masks_at_the_end": _count_pngs(second / "pseudo_labels" / "crf"),
                "processes_left_behind": result["processes_left_behind"],
                "steps": result["steps"],
            }
        )
    reference = first
    if (
        images != size and not args.kill_check_label_only
    ):  # stage 2 of the uninterrupted run saw other pseudo-labels: make the reference
        reference = Path(args.work_dir) / f"run_{size}_reference_{images}"
        shutil.rmtree(reference, ignore_errors=True)
        reference.mkdir(parents=True)
        shutil.copytree(second / "stage1", reference / "stage1")
        shutil.copytree(second / "pseudo_labels", reference / "pseudo_labels")
        command = run_command_line(tree, reference, cache_dir, images, args, ("stage2",))
        launches.append({"what": "uninterrupted stage-2 reference", **launch(command, reference, cache_dir, log_path)})
    comparison = {}
    for kind in ("bpm", "crf"):
        names = sorted(path.name for path in (second / "pseudo_labels" / kind).glob("*.png"))
        same = sum(
            (first / "pseudo_labels" / kind / name).is_file()
            and (first / "pseudo_labels" / kind / name).read_bytes()
            == (second / "pseudo_labels" / kind / name).read_bytes()
            for name in names
        )
        comparison[f"{kind}_masks"] = {"images": images, "resumed_run": len(names), "byte_identical": same}
    if args.kill_check_label_only:
        return {"run_dir": str(second), "launches": launches, "comparison": comparison}
    held_out = f"val_{images}"
    metrics = [
        _stable(json.loads((run / "stage2" / "predictions" / held_out / "report" / "metrics.json").read_text()))
        for run in (reference, second)
    ]
    comparison["stage2_metrics_equal"] = metrics[0] == metrics[1]
    comparison["stage2_mean_iou"] = [_first_mean_iou(metric) for metric in metrics]
    comparison["stage2_weights_identical"] = (reference / "stage2" / "model.safetensors").read_bytes() == (
        second / "stage2" / "model.safetensors"
    ).read_bytes()
    return {"run_dir": str(second), "reference": str(reference), "launches": launches, "comparison": comparison}


def _stable(value):
    """A metrics record without what differs between two equal runs (times, dates, paths)."""
    volatile = ("second", "time", "date", "path", "dir", "model")
    if isinstance(value, dict):
        return {key: _stable(item) for key, item in value.items() if not any(word in key for word in volatile)}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def _first_mean_iou(metrics: dict):
    for entry in (metrics.get("predictions") or {}).values():
        if isinstance(entry, dict) and "mean_iou" in entry:
            return entry["mean_iou"]
    return metrics.get("mean_iou")


# ------------------------------------------------------------------------------------------------ CPU costs


def cpu_costs(tree: Path, count: int, split: str = "train_aug") -> dict:
    """CPU seconds per image (this process, one thread: `time.process_time`, so the machine's load barely matters)
    of what the CPU does for each image whatever the GPU: JPEG decode; stage 1's loader (decode, resize to 384; with
    the voc preset's augmentation too, as when it runs in the loader rather than on the GPU); the label pass's input (decode, resize to 960, normalise); its dense CRF at the image
    size with the image's tags (background + its classes, the docs/method.md section 3 parameters), on smooth
    probabilities made from the ground truth; stage 2's loader input (the JPEG and a palette PNG decoded)."""
    import numpy as np
    from PIL import Image

    from ..data.transforms import AugmentationConfig, TrainTransform
    from ..models.cpfcte.crf import DenseCRFConfig, dense_crf
    from ..models.cpfcte.image_processing_cpfcte import resize_and_normalize
    from ..utils.arguments import load_preset

    torch.set_num_threads(1)
    voc = tree / VOC_DIR
    ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
    preset = load_preset("voc")
    augmentation = AugmentationConfig(
        **{key: preset[f"aug_{key}"] for key in AugmentationConfig.__dataclass_fields__ if f"aug_{key}" in preset}
    )
    train = TrainTransform(21, size=384, augmentation=augmentation)
    resize_only = TrainTransform(21, size=384, augmentation=augmentation, augment_in_loader=False)
    config = DenseCRFConfig()
    totals = {
        "decode": 0.0,
        "stage1_loader_augment_on_gpu": 0.0,
        "stage1_loader": 0.0,
        "label_input_960": 0.0,
        "crf": 0.0,
        "stage2_loader_decode": 0.0,
    }
    classes_total = 0
    for item_id in ids:
        image_path, mask_path = voc / "JPEGImages" / f"{item_id}.jpg", voc / "SegmentationClassAug" / f"{item_id}.png"
        start = time.process_time()
        with Image.open(image_path) as handle:
            image = np.asarray(handle.convert("RGB"))
        totals["decode"] += time.process_time() - start
        start = time.process_time()
        with Image.open(image_path) as handle:
            resize_only({"image": [handle.convert("RGB")], "labels": [[0]]})
        totals["stage1_loader_augment_on_gpu"] += time.process_time() - start
        start = time.process_time()
        with Image.open(image_path) as handle:
            train({"image": [handle.convert("RGB")], "labels": [[0]]})
        totals["stage1_loader"] += time.process_time() - start
        start = time.process_time()
        with Image.open(image_path) as handle:
            resize_and_normalize(
                [np.asarray(handle.convert("RGB"))], (960, 960), (0.5,) * 3, (0.5,) * 3, Image.BILINEAR
            )
        totals["label_input_960"] += time.process_time() - start
        start = time.process_time()
        with Image.open(image_path) as handle, Image.open(mask_path) as mask_handle:
            np.asarray(handle.convert("RGB")), np.asarray(mask_handle)
        totals["stage2_loader_decode"] += time.process_time() - start
        with Image.open(mask_path) as mask_handle:
            mask = np.asarray(mask_handle)
        present = [0, *[int(v) for v in np.unique(mask) if 0 < v < 255]]
        classes_total += len(present)
        probabilities = np.full((21, *mask.shape), 0.0, np.float32)
        for class_id in present:  # the truth, blurred at the borders and softened: a plausible model output
            probabilities[class_id] = 0.2 + 0.6 * (np.where(mask == 255, 0, mask) == class_id)
        probabilities[present] /= probabilities[present].sum(0, keepdims=True)
        start = time.process_time()
        dense_crf(image, probabilities, config)
        totals["crf"] += time.process_time() - start
    return {
        "images": len(ids),
        "classes_per_image_with_background": round(classes_total / max(1, len(ids)), 2),
        "cpu_seconds_per_image": {key: round(value / max(1, len(ids)), 4) for key, value in totals.items()},
    }


# ------------------------------------------------------------------------------------------------ main


def _load() -> dict:
    load1, load5, load15 = os.getloadavg()
    return {"load_1min": load1, "load_5min": load5, "load_15min": load15}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="cpfcte-hf bench rehearsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000], help="train_aug images per run (none: no run)")
    parser.add_argument("--cpu_costs", type=int, default=0, help="also time the per-image CPU work on N images")
    parser.add_argument("--data_root", help="the rehearsal tree (made or grown as needed; default WORK/data)")
    parser.add_argument("--work_dir", default="outputs/rehearsal", help="trees, runs, caches and the log")
    parser.add_argument("--steps", nargs="*", default=[], help="steps of `run` to make (default: all)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="more `run --override` KEY=VALUE settings")
    parser.add_argument(
        "--kill_check", action="store_true", help="kill -9 in pseudo_labels and stage2, resume, compare"
    )
    parser.add_argument(
        "--kill_check_images", type=int, default=0, help="the killed run labels only the first N images (default all)"
    )
    parser.add_argument(
        "--kill_check_label_only", action="store_true", help="kill and compare the label pass only (no stage 2)"
    )
    parser.add_argument(
        "--kill_check_stage2_only", action="store_true", help="kill and compare stage 2 only (the labels copied)"
    )
    parser.add_argument(
        "--kill_check_only", action="store_true", help="no measured run: check against the run made before"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep an existing run folder (else it is made anew)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)
    if args.kill_check and len(args.sizes) != 1:
        print("error: --kill_check takes one size.", file=sys.stderr)
        return 2
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "rehearsal.log"
    result = {"machine": machine_description(torch.device("cpu")), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "overrides": REHEARSAL_OVERRIDES + args.override, "processes": args.processes, "runs": []}  # fmt: skip
    if args.cpu_costs:
        tree, _ = prepare_tree(args, max(args.sizes or [args.cpu_costs]))
        result["cpu_costs"] = cpu_costs(tree, args.cpu_costs)
        print(json.dumps(result["cpu_costs"]), flush=True)
    for size in args.sizes:
        load_before = _load()
        tree_start = time.time()
        tree, tree_summary = prepare_tree(args, size)
        run_dir, cache_dir = work / f"run_{size}", work / f"cache_{size}"
        if not args.keep and not args.kill_check_only:  # --kill_check_only reads the run made before
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(cache_dir, ignore_errors=True)
        command = run_command_line(tree, run_dir, cache_dir, size, args, args.steps)
        if args.kill_check_only:
            if not (run_dir / "run_summary.json").is_file():
                print(f"error: --kill_check_only needs the finished run {run_dir}.", file=sys.stderr)
                return 2
            entry = {"train_images": size, "exit_status": 0, "seconds": 0.0, "measured": "before"}
            entry["kill_check"] = kill_check(args, size, tree, run_dir, cache_dir, log_path)
            result["runs"].append(entry)
            continue
        measured = launch(command, run_dir, cache_dir, log_path)
        entry = {
            "train_images": size,
            "val_images": val_count(size),
            "tree": {"root": str(tree), "seconds_this_call": round(time.time() - tree_start - measured["seconds"], 2),
                     **{key: tree_summary[key] for key in ("seconds", "image_bytes", "mask_bytes", "written")}},
            "command": " ".join(command),
            "load_before": load_before,
            "load_after": _load(),
            **measured,
        }  # fmt: skip
        _add_rates(entry, run_dir, size)
        if args.kill_check and measured["exit_status"] == 0:
            entry["kill_check"] = kill_check(args, size, tree, run_dir, cache_dir, log_path)
        result["runs"].append(entry)
        print(json.dumps({key: entry[key] for key in ("train_images", "exit_status", "seconds")}), flush=True)
    report_results(result, args.output)
    return 0 if all(run["exit_status"] == 0 for run in result["runs"]) else 3


def _add_rates(entry: dict, run_dir: Path, size: int) -> None:
    """images/s of each step: images it handled / its wall time; the trainers' own figures where they wrote them."""
    val = val_count(size)
    for step in entry["steps"]:
        name, seconds = step["step"], step["seconds_reported"] or step["seconds_wall"]
        folder = run_dir / STEP_FOLDERS.get(name, name)
        if name in ("stage1", "stage2"):
            results = folder / "train_results.json"
            if results.is_file():
                train = json.loads(results.read_text())
                step["train_runtime_s"] = train.get("train_runtime")
                step["train_samples_per_second"] = train.get("train_samples_per_second")
        images = {"pseudo_labels": size, "eval_stage1_tagged": val, "eval_stage1_untagged": val}.get(name)
        if images and seconds:
            step["images"] = images
            step["images_per_second"] = round(images / seconds, 3)
            summary = folder / "summary.json"
            if summary.is_file():
                step["label_seconds"] = json.loads(summary.read_text()).get("seconds")


if __name__ == "__main__":
    raise SystemExit(main())
