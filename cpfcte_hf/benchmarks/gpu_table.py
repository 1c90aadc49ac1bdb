# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The device benchmark's results against the project's goals (`goals`), and the summary table it prints
(`summary_table`)."""

from __future__ import annotations

import math

from .gpu_settings import (
    GOAL_HEAD_OVERHEAD,
    GOAL_NAMES,
    GOAL_PSEUDO_LABEL_CPUS,
    GOAL_PSEUDO_LABEL_SECONDS,
    GOAL_TRAIN_IMAGES_PER_S,
)


def goals(results: dict) -> list[dict]:
    """Each goal with the measured value and whether it is met (None where it was not measured or not judged)."""
    overhead_goal, throughput_goal, pseudo_label_goal = GOAL_NAMES
    if results["smoke"] or results["machine"]["device"].split(":")[0] != "cuda":
        return [
            _goal(name, None, None, "not judged: the goals are for a GPU run, this was not one") for name in GOAL_NAMES
        ]
    parts = results["parts"]
    runs = [
        (part, key, value)
        for part in ("train", "train_compiled")
        for key, value in parts.get(part, {}).items()
        if key.startswith("batch_") and isinstance(value, dict) and "full" in value
    ]
    judged = []
    if runs:
        part, key, best = min(runs, key=lambda run: run[2]["head_overhead"]["median"])
        value = best["head_overhead"]["median"]
        note = f"lowest of the runs: {part} {key}, median of {best['full']['repeats']} interleaved repeats"
        judged.append(_goal(overhead_goal, value, value <= GOAL_HEAD_OVERHEAD, note))
        part, key, best = max(runs, key=lambda run: run[2]["full"]["images_per_s"])
        value = best["full"]["images_per_s"]
        judged.append(_goal(throughput_goal, value, value >= GOAL_TRAIN_IMAGES_PER_S, f"{part} {key}, full CPF-CTE"))
    else:
        judged += [
            _goal(overhead_goal, None, None, "not measured"),
            _goal(throughput_goal, None, None, "not measured"),
        ]
    end_to_end = parts.get("pseudo_label_end_to_end", {})
    projected = end_to_end.get("projected_voc_train_aug_s")
    if projected is None or not end_to_end.get("crf"):
        judged.append(_goal(pseudo_label_goal, projected, None, end_to_end.get("reason", "not measured")))
    else:
        note = f"{end_to_end['crf_workers']} CRF workers"
        if end_to_end["crf_workers"] != GOAL_PSEUDO_LABEL_CPUS:
            note += f" (the goal is stated for {GOAL_PSEUDO_LABEL_CPUS})"
        judged.append(_goal(pseudo_label_goal, projected, projected <= GOAL_PSEUDO_LABEL_SECONDS, note))
    return judged


def _goal(goal: str, value, met, note: str) -> dict:
    return {"goal": goal, "value": value, "met": met, "note": note}


def summary_table(results: dict) -> str:
    """The human-readable summary printed at the end."""
    machine = results["machine"]
    lines = [
        f"cpfcte_hf device benchmark, {machine['date']}: {machine.get('gpu', machine['device'])}, "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}"
        + (" (SMOKE: tiny sizes, numbers mean nothing)" if results["smoke"] else ""),
        "",
        f"{'part':<24} {'what':<34} {'median':>12} {'spread':>8}  note",
    ]
    for part, result in results["parts"].items():
        lines += [_row(part, *row) for row in _part_rows(part, result)]
    lines.append("")
    for goal in results["goals"]:
        verdict = {True: "MET", False: "NOT MET", None: "-"}[goal["met"]]
        value = goal["value"]
        value_text = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        lines.append(f"goal: {goal['goal']}: {verdict} (value {value_text}; {goal['note']})")
    return "\n".join(lines)


def _row(part: str, what: str, value, spread=None, note: str = "") -> str:
    value_text = f"{value:12.4g}" if isinstance(value, (int, float)) and value is not None else f"{'-':>12}"
    spread_text = f"{spread:8.1%}" if isinstance(spread, float) else f"{'':>8}"
    return f"{part:<24} {what:<34} {value_text} {spread_text}  {note}"


def _part_rows(part: str, result: dict) -> list[tuple]:
    """The table's rows of one part: `(what, value, spread, note)`, the last ones optional."""
    status = result.get("status")
    if status != "ok":
        error_lines = result.get("error", "").strip().splitlines() or [""]
        return [(status, None, None, result.get("reason") or error_lines[-1])]
    if part in ("train", "train_compiled"):
        return _train_rows(result)
    if part in ("device_augmentation", "deeplab"):
        return [(f"batch {result['batch_size']} images/s", result["images_per_s"], result["spread"])]
    if part == "pseudo_label_model":
        return [
            (f"{key} images/s", value["images_per_s"], value["spread"])
            for key, value in result.items()
            if key.startswith("batch_")
        ]
    if part == "pseudo_label_end_to_end":
        note = f"{result['images']} images, CRF={'on' if result['crf'] else 'OFF'}"
        return [
            ("images/s", result["images_per_s"], None, note),
            ("projected VOC train_aug, s", result["projected_voc_train_aug_s"]),
        ]
    if part == "loader":
        return [
            (
                f"{loader['num_workers']} workers images/s",
                loader["images_per_s"],
                loader["spread"],
                f"{loader['images_per_s_per_worker']:.0f} per worker",
            )
            for loader in result["loaders"]
        ]
    return []


def _train_rows(result: dict) -> list[tuple]:
    rows = []
    for key, value in result.items():
        if not key.startswith("batch_"):
            continue
        if "full" not in value:
            rows.append((f"{key}", None, None, value.get("reason", "")))
            continue
        for model in ("full", "backbone"):
            memory = value[model]["peak_memory_gib"]
            note = f"peak {memory:.1f} GiB" if memory is not None else ""
            rows.append((f"{key} {model} images/s", value[model]["images_per_s"], value[model]["spread"], note))
        overhead = value["head_overhead"]
        note = f"min {overhead['min']:+.1%}, max {overhead['max']:+.1%}"
        rows.append((f"{key} head overhead, %", 100 * overhead["median"], None, note))
    return rows


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
