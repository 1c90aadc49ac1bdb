# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The kill check of the VOC-scale rehearsal (`rehearsal --kill_check`): kill -9 in the label pass and in stage 2,
resume, and compare with the uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .rehearsal_data import _write_lists
from .rehearsal_launch import launch, run_command_line


def _count_pngs(folder: Path) -> int:
    return len(list(folder.glob("*.png"))) if folder.is_dir() else 0


def kill_check(args, size: int, tree: Path, first: Path, cache_dir: Path, log_path: Path) -> dict:
    """Kill -9 in the label pass and in stage 2, resume, and compare with the uninterrupted run `first` (see the
    module docstring). With `--kill_check_images N` below the size, the killed run labels the first N images with
    `first`'s stage-1 model (their masks are compared with `first`'s masks of those images), and an uninterrupted
    stage 2 on a copy of its pseudo-labels is the stage-2 reference."""
    images = args.kill_check_images or size
    second = Path(args.work_dir) / f"run_{size}_killed_{images}{'_stage2' if args.kill_check_stage2_only else ''}"
    steps = _prepare_killed_run(args, size, images, tree, first, second)
    command = run_command_line(tree, second, cache_dir, images, args, steps)
    launches = [
        _attempt(label, command, second, cache_dir, log_path, kill_when)
        for label, kill_when in _kill_attempts(args, second, images)
    ]
    reference = first
    if (
        images != size and not args.kill_check_label_only
    ):  # stage 2 of the uninterrupted run saw other pseudo-labels: make the reference
        reference = Path(args.work_dir) / f"run_{size}_reference_{images}"
        launches.append(_stage2_reference(args, tree, second, reference, cache_dir, images, log_path))
    comparison = _compare_masks(first, second, images)
    if args.kill_check_label_only:
        return {"run_dir": str(second), "launches": launches, "comparison": comparison}
    comparison.update(_compare_stage2(reference, second, images))
    return {"run_dir": str(second), "reference": str(reference), "launches": launches, "comparison": comparison}


def _prepare_killed_run(args, size: int, images: int, tree: Path, first: Path, second: Path) -> tuple[str, ...]:
    """The killed run's folder, with `first`'s stage 1 (and, for `--kill_check_stage2_only`, its pseudo-labels);
    returns the steps it runs."""
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
    return steps


def _kill_attempts(args, second: Path, images: int) -> list[tuple]:
    """`(what, kill_when)` of each launch of the killed run: killed in the label pass, killed in stage 2, resumed."""
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
    return attempts


def _attempt(label: str, command: list[str], second: Path, cache_dir: Path, log_path: Path, kill_when) -> dict:
    result = launch(command, second, cache_dir, log_path, kill_when)
    return {
        "what": label,
        "killed": result["killed"],
        "exit_status": result["exit_status"],
        "seconds": result["seconds"],
        "crf_masks_at_the_end": _count_pngs(second / "pseudo_labels" / "crf"),
        "processes_left_behind": result["processes_left_behind"],
        "steps": result["steps"],
    }


def _stage2_reference(args, tree: Path, second: Path, reference: Path, cache_dir: Path, images: int, log_path):
    """An uninterrupted stage 2 on a copy of the killed run's stage 1 and pseudo-labels, in `reference`."""
    shutil.rmtree(reference, ignore_errors=True)
    reference.mkdir(parents=True)
    shutil.copytree(second / "stage1", reference / "stage1")
    shutil.copytree(second / "pseudo_labels", reference / "pseudo_labels")
    command = run_command_line(tree, reference, cache_dir, images, args, ("stage2",))
    return {"what": "uninterrupted stage-2 reference", **launch(command, reference, cache_dir, log_path)}


def _compare_masks(first: Path, second: Path, images: int) -> dict:
    """Per mask set, how many of the resumed run's masks are byte for byte the uninterrupted run's."""
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
    return comparison


def _compare_stage2(reference: Path, second: Path, images: int) -> dict:
    """Whether stage 2 of the resumed run has the reference's metrics and weights."""
    held_out = f"val_{images}"
    metrics = [
        _stable(json.loads((run / "stage2" / "predictions" / held_out / "report" / "metrics.json").read_text()))
        for run in (reference, second)
    ]
    return {
        "stage2_metrics_equal": metrics[0] == metrics[1],
        "stage2_mean_iou": [_first_mean_iou(metric) for metric in metrics],
        "stage2_weights_identical": (reference / "stage2" / "model.safetensors").read_bytes()
        == (second / "stage2" / "model.safetensors").read_bytes(),
    }


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
