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
import shutil
import sys
import time
from pathlib import Path

import torch

from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import machine_description, report_results
from .rehearsal_data import cpu_costs, prepare_tree, val_count
from .rehearsal_kill_check import kill_check
from .rehearsal_launch import (  # noqa: F401 - the monitor's pieces: importable here too
    REHEARSAL_OVERRIDES,
    STEP_FOLDERS,
    LaunchMonitor,
    descendants,
    folder_bytes,
    launch,
    run_command_line,
)


def _load() -> dict:
    load1, load5, load15 = os.getloadavg()
    return {"load_1min": load1, "load_5min": load5, "load_15min": load15}


def _parser() -> argparse.ArgumentParser:
    parser = BothSpellingsParser(
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
    return parser


def main(argv=None) -> int:
    args = parse_plain_args(_parser(), argv)
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
        entry = _run_size(args, size, work, log_path)
        if entry is None:
            return 2
        result["runs"].append(entry)
    report_results(result, args.output)
    return 0 if all(run["exit_status"] == 0 for run in result["runs"]) else 3


def _run_size(args, size: int, work: Path, log_path: Path) -> dict | None:
    """The measured run of `size` images (and its kill check), or with `--kill_check_only` the kill check of the run
    made before; None when that run is missing (the error printed)."""
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
            return None
        entry = {"train_images": size, "exit_status": 0, "seconds": 0.0, "measured": "before"}
        entry["kill_check"] = kill_check(args, size, tree, run_dir, cache_dir, log_path)
        return entry
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
    print(json.dumps({key: entry[key] for key in ("train_images", "exit_status", "seconds")}), flush=True)
    return entry


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
