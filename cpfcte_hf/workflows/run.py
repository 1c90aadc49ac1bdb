# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""The whole method in one command: stage 1 -> pseudo-labels -> stage 2 -> evaluation -> Hub folder.

    cpfcte-hf run --config voc --data_root data/VOCdevkit/VOC2012 --output_dir runs/voc
    cpfcte-hf run --config shapes                          # the procedural set, written to OUTPUT_DIR/data
    cpfcte-hf run --config my_run.yaml --print_config      # my_run.yaml: `base: voc` + changes
    cpfcte-hf run --config shapes --override top_k=4 train_deeplab.max_steps=300    # or changes on the command line

Steps, each the command a user could type (printed as it starts), each in its own folder of --output_dir:

    data                  (shapes only) the procedural set written in the VOC layout: data/
    stage1                `train` on the train split's image-level labels: stage1/
    pseudo_labels         `label` of the train split (BPM + dense CRF, with the image tags): pseudo_labels/
    stage2                `train-deeplab` on pseudo_labels/crf, then its multi-scale + CRF evaluation: stage2/
    eval_stage1_tagged    `label` of the held-out split with its tags (BPM, CRF): eval/stage1_tagged/
    eval_stage1_untagged  `label --no_use_image_labels --no_crf` of the held-out split: eval/stage1_untagged/
    eval_stage2           `train-deeplab --do_train false` at one scale, no CRF: eval/stage2/
    export                (with --export datasets coco, right after pseudo_labels) `export` of them: export/
    hub                   `push --dry_run` of the stage-1 checkpoint with the results: hub/

and OUTPUT_DIR/run_summary.json. The preset's flat keys are stage-1 (`train`) settings; its `label:` and
`train_deeplab:` sections set the other steps (`train_deeplab: {base: deeplab_voc}`), and `run:` this command's
options. The resolved preset is written to OUTPUT_DIR/run_preset.yaml and every step reads it. A run that cannot
start (missing data, an unknown key, a model that is not there, bf16 on a machine without it) is refused in one line
before anything is written.

Every step writes a record next to its folder (`stage1.step.json`, ...): its resolved settings and their fingerprint (SHA-256), which
includes the fingerprints of the steps it reads from. A rerun skips a step whose record is complete and whose
fingerprint matches, resumes one that was started with the same settings, and refuses one made with other
settings (naming the settings that differ) unless `--overwrite`, which deletes that step's folder and redoes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data import check_dataset
from ..data.arguments import DataSourceArguments
from ..utils.arguments import (
    COMMAND_SECTIONS,
    check_model_option,
    describe,
    fail,
    load_preset,
    named_preset,
    parse_args_with_presets,
    parse_key_values,
    print_error,
    print_once,
)
from ..utils.io import atomic_write_text


STEP_RECORD_SUFFIX = ".step.json"
# Settings that do not change a step's outputs (where they go, how fast, how verbose): left out of fingerprints.
UNFINGERPRINTED = {
    "output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "overwrite", "overwrite_output_dir",
    "crf_workers", "progress", "disable_tqdm", "dataloader_num_workers", "report_to", "logging_steps", "device",
    "num_overlays", "print_config", "report_html",
}  # fmt: skip


@dataclass
class RunArguments(DataSourceArguments):
    """Options of `cpfcte-hf run`; stage settings come from the preset (see the module docstring)."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder of the run (default: outputs/<preset>)."})
    train_split: str | None = field(default=None, metadata={"help": "Split that is trained on and pseudo-labelled."})
    eval_split: str | None = field(default=None, metadata={"help": "Held-out split with ground truth (default val)."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub id written on the card (default: local/<name>)."})
    override: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Step settings KEY=VALUE ... on top of the preset: top_k=4 (stage 1), label.size=128, "
            "train_deeplab.max_steps=300."
        },
    )
    steps: list[str] = field(default_factory=list, metadata={"help": "Run only these steps (default: all)."})
    overwrite: bool = field(
        default=False, metadata={"help": "Redo steps whose outputs were made with other settings."}
    )
    crf_workers: int | None = field(default=None, metadata={"help": "CRF processes (default: all CPUs; 0 = serial)."})
    export: list[str] = field(
        default_factory=list,
        metadata={"help": "Export the pseudo-labels (datasets, coco) to OUTPUT_DIR/export/ (`cpfcte-hf export`)."},
    )


STEPS = (
    "data",
    "stage1",
    "pseudo_labels",
    "stage2",
    "eval_stage1_tagged",
    "eval_stage1_untagged",
    "eval_stage2",
    "export",
    "hub",
)


class StepMismatchError(ValueError):
    """A step's folder holds outputs made with other settings."""


# ---------------------------------------------------------------------------------------------------- fingerprints


def _strip(value):
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key not in UNFINGERPRINTED}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def step_settings(command: str, argv: list[str], run_dir: Path) -> dict:
    """The resolved settings of `cpfcte-hf <command> <argv>` (its dataclasses), paths inside the run relative."""
    instances = parse_step_arguments(command, argv)
    resolved = {}
    for instance in instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        resolved[type(instance).__name__] = values
    text = json.dumps(_strip(resolved), sort_keys=True, default=str).replace(str(run_dir), "$RUN")
    return json.loads(text)


def fingerprint(settings: dict, after: dict[str, str]) -> str:
    payload = json.dumps({"settings": settings, "after": after}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


def settings_difference(old: dict, new: dict, limit: int = 6) -> str:
    before, after = dict(_flatten(old)), dict(_flatten(new))
    keys = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    parts = [f"{key.split('.', 1)[-1]}: {before.get(key)!r} -> {after.get(key)!r}" for key in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more if parts else "the steps it reads from changed"


def step_record_path(directory: Path) -> Path:
    """A step's record sits next to its folder (`stage1/` -> `stage1.step.json`), so the folder is the command's."""
    return directory.with_name(directory.name + STEP_RECORD_SUFFIX)


def read_step_record(directory: Path) -> dict | None:
    path = step_record_path(directory)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_main_process() -> bool:
    """Rank 0 of a launcher (`RANK`), or the only process: the one that writes the run's own files and log."""
    return int(os.environ.get("RANK", "0")) == 0


def write_step_record(directory: Path, record: dict) -> None:
    if is_main_process():
        directory.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(step_record_path(directory), json.dumps(record, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------- the plan


@dataclass
class Step:
    name: str
    command: str | None  # a `cpfcte-hf` command, or None for a step run in this module (data)
    argv: list[str]
    directory: Path
    outputs: list[str]  # files (relative to `directory`) that a complete step has written
    after: tuple[str, ...] = ()
    fatal: bool = True


def resolved_run_preset(preset: dict, run_args: RunArguments) -> dict:
    """The preset with the run's data keys written into the flat part and every section that has them."""
    data = {
        "dataset": run_args.dataset,
        "data_root": run_args.data_root,
        "dataset_option": list(run_args.dataset_option),
        "cache_dir": run_args.cache_dir,
    }
    resolved = {key: value for key, value in preset.items() if key != "run"}
    resolved.setdefault("command", "train")  # the flat keys are stage 1's, also for a preset without sections
    resolved.update({key: value for key, value in data.items() if value is not None})
    resolved["train_split"] = run_args.train_split
    for section in COMMAND_SECTIONS:
        if isinstance(resolved.get(section), dict):
            values = dict(resolved[section])
            values.update(
                {
                    key: value
                    for key, value in data.items()
                    if value is not None and (key in values or key == "dataset")
                }
            )
            if "train_split" in values:
                values["train_split"] = run_args.train_split
            if "eval_split" in values:
                values["eval_split"] = run_args.eval_split
            resolved[section] = values
    return resolved


def _shapes_write_options(run_args: RunArguments) -> dict:
    return parse_key_values(run_args.dataset_option)


def plan_steps(run_args: RunArguments, run_dir: Path, preset_path: Path) -> list[Step]:
    config = ["--config", str(preset_path)]
    split, held_out = run_args.train_split, run_args.eval_split
    crf = [] if run_args.crf_workers is None else ["--crf_workers", str(run_args.crf_workers)]
    stage1, pseudo, stage2 = run_dir / "stage1", run_dir / "pseudo_labels", run_dir / "stage2"
    evaluation = run_dir / "eval"
    steps = []
    if run_args.dataset == "shapes" and run_args.data_root == str(run_dir / "data"):
        steps.append(Step("data", None, [], run_dir / "data", ["class_names.txt"]))
    first = ("data",) if steps else ()
    steps += [
        Step("stage1", "train", [*config, "--output_dir", str(stage1)], stage1, ["config.json", "model.safetensors"], first),
        Step(
            "pseudo_labels",
            "label",
            [*config, "--model", str(stage1), "--split", split, "--output_dir", str(pseudo), "--no_progress", *crf],
            pseudo,
            ["summary.json"],
            ("stage1",),
        ),
        Step(
            "stage2",
            "train-deeplab",
            [*config, "--pseudo_labels", str(pseudo), "--output_dir", str(stage2), *crf],
            stage2,
            ["config.json", "model.safetensors", f"predictions/{held_out}/report/metrics.json"],
            ("pseudo_labels",),
        ),
        Step(
            "eval_stage1_tagged",
            "label",
            [*config, "--model", str(stage1), "--split", held_out, "--output_dir", str(evaluation / "stage1_tagged"),
             "--no_progress", "--num_overlays", "8", *crf],
            evaluation / "stage1_tagged",
            ["report/metrics.json"],
            ("stage1",),
        ),
        Step(
            "eval_stage1_untagged",
            "label",
            [*config, "--model", str(stage1), "--split", held_out, "--output_dir",
             str(evaluation / "stage1_untagged"), "--no_use_image_labels", "--no_crf", "--no_progress"],
            evaluation / "stage1_untagged",
            ["report/metrics.json"],
            ("stage1",),
        ),
        Step(
            "eval_stage2",
            "train-deeplab",
            [*config, "--do_train", "false", "--model_name_or_path", str(stage2), "--test_scales", "1.0",
             "--test_crf", "false", "--output_dir", str(evaluation / "stage2"), "--num_overlays", "8"],
            evaluation / "stage2",
            [f"predictions/{held_out}/report/metrics.json"],
            ("stage2",),
        ),
        Step(
            "hub",
            "push",
            ["--model", str(stage1), "--repo_id", run_args.repo_id, "--dry_run", str(run_dir / "hub"), "--overwrite",
             "--results", str(pseudo), str(evaluation / "stage1_tagged"), str(stage2),
             str(evaluation / "stage1_untagged"), str(evaluation / "stage2")],
            run_dir / "hub",
            ["README.md"],
            ("pseudo_labels", "stage2", "eval_stage1_tagged", "eval_stage1_untagged", "eval_stage2"),
            fatal=False,
        ),
    ]  # fmt: skip
    if run_args.export:  # the pseudo-labels as a datasets dataset and/or COCO JSON; a failed export stops no step
        export = run_dir / "export"
        argv = ["--config", str(preset_path), "--labels", str(pseudo), "--format", *run_args.export]
        argv += ["--output_dir", str(export), "--overwrite", "--no_progress"]
        step = Step("export", "export", argv, export, ["export_summary.json"], ("pseudo_labels",), fatal=False)
        steps.insert([s.name for s in steps].index("pseudo_labels") + 1, step)  # right after the labelling
    return steps


# ------------------------------------------------------------------------------------------------------ running


def _reset_accelerate_state() -> None:
    """Each step builds its own `TrainingArguments`; keep the process group, forget the previous step's settings."""
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    except Exception:  # noqa: BLE001 - an accelerate without this helper: nothing to reset
        pass


def say(message: str) -> None:
    """A line of the run's log, from the main process only."""
    if is_main_process():
        print(message, flush=True)


MAIN_PROCESS_ONLY = ("push",)  # commands that do not split their work between processes (nor does the data step)


def _on_main_process(function) -> int:
    """`function()`'s exit status, run on the main process only when there are several; the others wait for it."""
    from ..utils.distributed import distributed_state

    state = distributed_state()
    from accelerate.utils import broadcast_object_list

    status = [function() if state.is_main_process else None]
    return broadcast_object_list(status)[0]


def _run_data_step(run_args: RunArguments, directory: Path, options: dict) -> int:
    from ..data.shapes import write_shapes_voc

    written = write_shapes_voc(str(directory), **options)
    print(f"{written['splits']} images of {written['class_names']} in {directory}", flush=True)
    return 0


def _has_complete_checkpoint(directory: Path) -> bool:
    from ..utils.trainer_mixins import last_complete_checkpoint

    return directory.is_dir() and last_complete_checkpoint(str(directory)) is not None


def execute_step(step: Step, run_args: RunArguments, run_dir: Path, fingerprints: dict, data_options: dict) -> dict:
    """Runs, resumes, skips or refuses `step`; returns its entry of run_summary.json."""
    from ..cli.main import run_command

    if step.command is None:
        settings = {"write_shapes_voc": data_options}
    else:
        settings = step_settings(step.command, step.argv, run_dir)
    after = {name: fingerprints[name] for name in step.after if name in fingerprints}
    digest = fingerprint(settings, after)
    fingerprints[step.name] = digest
    printable = (
        "cpfcte-hf " + " ".join([step.command, *step.argv]) if step.command else f"write_shapes_voc {data_options}"
    )
    entry = {"directory": str(step.directory), "command": printable, "fingerprint": digest}

    record = read_step_record(step.directory)
    if record is not None and record.get("fingerprint") != digest:
        if not run_args.overwrite:
            raise StepMismatchError(
                f"step {step.name}: {step.directory} was made with other settings "
                f"({settings_difference(record.get('settings', {}), settings)}). Pass --overwrite to redo it and the "
                "steps after it, or choose another --output_dir."
            )
        say(f"[run] {step.name}: settings changed, --overwrite: removing {step.directory}")
        if is_main_process():
            shutil.rmtree(step.directory, ignore_errors=True)
            step_record_path(step.directory).unlink(missing_ok=True)
        record = None
    complete = all((step.directory / output).is_file() for output in step.outputs)
    if record is not None and record.get("status") == "complete" and complete:
        say(f"[run] {step.name}: done before with the same settings, skipped ({step.directory})")
        return {**entry, "status": "skipped", "seconds": 0.0}

    argv = list(step.argv)
    if step.command in ("train", "train-deeplab") and _has_complete_checkpoint(step.directory):  # both stages resume
        argv += ["--resume_from_checkpoint", "last"]
    say(f"\n=== [run] {step.name}: {printable} ===")
    base_record = {
        "step": step.name,
        "fingerprint": digest,
        "after": after,
        "settings": settings,
        "command": printable,
    }
    write_step_record(step.directory, {**base_record, "status": "started"})
    start = time.perf_counter()
    _reset_accelerate_state()
    if step.command is None:
        status = _on_main_process(lambda: _run_data_step(run_args, step.directory, data_options))
    elif step.command in MAIN_PROCESS_ONLY:
        status = _on_main_process(lambda: run_command(step.command, argv))
    else:
        status = run_command(step.command, argv)
    seconds = round(time.perf_counter() - start, 3)
    say(f"=== [run] {step.name}: {seconds:.0f} s, exit status {status} ===")
    if status != 0:
        return {**entry, "status": "failed", "exit_status": status, "seconds": seconds}
    write_step_record(step.directory, {**base_record, "status": "complete", "seconds": seconds})
    return {**entry, "status": "ran", "seconds": seconds}


def _metrics(path: Path) -> dict | None:
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {
        "class_names": report.get("class_names", []),
        "num_images": report.get("num_images"),
        "predictions": {
            name: {
                "mean_iou": entry.get("mean_iou"),
                "per_class_iou": [item.get("iou") for item in entry.get("per_class", [])],
            }
            for name, entry in report.get("predictions", {}).items()
        },
    }


def collect_results(run_dir: Path, held_out: str) -> dict:
    """The run's numbers, from the reports its steps wrote (None where a report is missing)."""
    reports = {
        "pseudo_labels_train": run_dir / "pseudo_labels" / "report" / "metrics.json",
        "stage1_tagged": run_dir / "eval" / "stage1_tagged" / "report" / "metrics.json",
        "stage1_untagged": run_dir / "eval" / "stage1_untagged" / "report" / "metrics.json",
        "stage2_single_scale": run_dir / "eval" / "stage2" / "predictions" / held_out / "report" / "metrics.json",
        "stage2_ms_crf": run_dir / "stage2" / "predictions" / held_out / "report" / "metrics.json",
    }
    return {name: _metrics(path) for name, path in reports.items()}


def export_record(directory: Path, formats: list[str]) -> dict:
    """What the export step wrote (from its export_summary.json): per split, the images exported and left out."""
    record = {"directory": str(directory), "formats": list(formats), "splits": None}
    path = directory / "export_summary.json"
    if path.is_file():
        splits = json.loads(path.read_text()).get("splits", {})
        keys = ("exported", "left_out", "left_out_by_reason", "mask_set")
        record["splits"] = {name: {key: entry.get(key) for key in keys} for name, entry in splits.items()}
    return record


def _miou(results: dict, report: str, prediction: str):
    entry = (results.get(report) or {}).get("predictions", {}).get(prediction)
    return None if entry is None else entry["mean_iou"]


def headline(results: dict) -> dict:
    """The run's mIoUs (fractions) on the held-out split, and of the training split's pseudo-labels."""
    return {
        "train_pseudo_labels_bpm": _miou(results, "pseudo_labels_train", "BPM"),
        "train_pseudo_labels_crf": _miou(results, "pseudo_labels_train", "CRF"),
        "stage1_tagged_bpm": _miou(results, "stage1_tagged", "BPM"),
        "stage1_tagged_crf": _miou(results, "stage1_tagged", "CRF"),
        "stage1_untagged": _miou(results, "stage1_untagged", "BPM"),
        "stage2": _miou(results, "stage2_single_scale", "MS"),
        "stage2_ms_crf": _miou(results, "stage2_ms_crf", "MS+CRF"),
    }


def resolve_run_arguments(run_args: RunArguments, preset: dict, preset_name: str) -> RunArguments:
    """Fills what the preset and the command line left open: output folder, splits, shapes data, Hub id."""
    name = Path(preset_name).stem
    run_dir = Path(run_args.output_dir or os.path.join("outputs", name)).resolve()
    train_split = run_args.train_split or preset.get("train_split") or "train"
    eval_split = run_args.eval_split or "val"
    dataset, data_root, options = run_args.dataset, run_args.data_root, list(run_args.dataset_option)
    if not dataset:
        raise ValueError("No --dataset: give one, or a --config preset that has one (voc, coco, shapes, ...).")
    if dataset == "shapes" and data_root is None:
        data_root = str(run_dir / "data")
    return dataclasses.replace(
        run_args,
        output_dir=str(run_dir),
        dataset=dataset,
        data_root=data_root,
        dataset_option=options,
        train_split=train_split,
        eval_split=eval_split,
        repo_id=run_args.repo_id or f"local/cpf-cte-{name}",
    )


def apply_overrides(preset: dict, overrides: list[str]) -> dict:
    """`--override` pairs on a preset: `top_k=4` sets a flat (stage-1) key, `label.size=128` a section's key."""
    preset = {key: dict(value) if isinstance(value, dict) else value for key, value in preset.items()}
    for key, value in parse_key_values(overrides).items():
        section, dot, name = key.partition(".")
        if not dot:
            preset[key] = value
        elif section in COMMAND_SECTIONS:
            preset.setdefault(section, {})[name] = value
        else:
            raise ValueError(f"--override {key}: {section!r} is no command section ({', '.join(COMMAND_SECTIONS)}).")
    return preset


def run(run_args: RunArguments, preset_name: str) -> dict:
    """
    Checks the run (`check_run_inputs`: nothing is written when it cannot start), runs the steps (see the module
    docstring) and writes OUTPUT_DIR/run_summary.json; returns the summary.
    """
    preset = apply_overrides(load_preset(preset_name), run_args.override)
    run_args = resolve_run_arguments(run_args, preset, preset_name)
    run_dir = Path(run_args.output_dir)
    data_options = {}
    if run_args.dataset == "shapes" and run_args.data_root == str(run_dir / "data"):
        # Written once by the data step; the other steps read the folder (no generation options: no rewriting).
        data_options = _shapes_write_options(run_args)
        data_options.pop("num_test", None)
        run_args = dataclasses.replace(run_args, dataset_option=[])
    unknown = sorted(set(run_args.steps) - set(STEPS))
    if unknown:
        raise ValueError(f"--steps: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEPS)}.")
    selected = set(run_args.steps) or set(STEPS)
    if "export" in run_args.steps and not run_args.export:
        raise ValueError("--steps export: say which formats with --export (datasets, coco).")
    from ..export import FORMATS

    if set(run_args.export) - set(FORMATS):
        raise ValueError(f"--export {' '.join(run_args.export)}: the formats are {', '.join(FORMATS)}.")
    preset_path = run_dir / "run_preset.yaml"
    steps = [step for step in plan_steps(run_args, run_dir, preset_path) if step.name in selected]
    resolved = resolved_run_preset(preset, run_args)
    check_run_inputs(run_args, resolved, steps, preset_name)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(preset_path, yaml.safe_dump(resolved, sort_keys=False))
    # Every step reads run_preset.yaml: the other processes wait until the main one has written it (a run without
    # the shapes data step, whose broadcast waits too, would otherwise let a fast rank read a missing preset).
    from ..utils.distributed import distributed_state, shared_process_group

    distributed_state().wait_for_everyone()

    summary = {"preset": str(preset_name), "output_dir": str(run_dir), "steps": {}, "status": "complete"}
    fingerprints: dict[str, str] = {}
    start = time.perf_counter()
    with shared_process_group():
        for step in steps:
            entry = execute_step(step, run_args, run_dir, fingerprints, data_options)
            summary["steps"][step.name] = entry
            if entry["status"] == "failed":
                if step.fatal:
                    summary["status"] = f"failed at {step.name}"
                    break
                say(f"[run] {step.name} failed (exit status {entry['exit_status']}); the run goes on.")
    summary["seconds_total"] = round(time.perf_counter() - start, 3)
    summary["results"] = collect_results(run_dir, run_args.eval_split)
    summary["mean_iou"] = headline(summary["results"])
    if run_args.export:
        summary["export"] = export_record(run_dir / "export", run_args.export)
    summary["arguments"] = dataclasses.asdict(run_args)
    if is_main_process():
        atomic_write_text(run_dir / "run_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# ------------------------------------------------------------------------------------------------ the checks

# How a run turns bf16 off for the step that trains with the recipe of that command.
BF16_OFF = {"train": "--override bf16=false", "train-deeplab": "--override train_deeplab.bf16=false"}


def check_run_inputs(run_args: RunArguments, preset: dict, steps: list[Step], preset_name: str) -> None:
    """
    Refuses a run that cannot start before it writes anything (`run_preset.yaml`, a folder, a step record) or
    builds a model, reporting the first problem in one line: the data (root, split files, tags; `check_dataset`),
    then each step's settings as its command resolves them from `preset` (unknown keys, refused values), the
    models it reads from outside the run, and bf16 on a machine without it. What an earlier step of the run makes
    (a checkpoint, the pseudo-labels) is not checked; what a step reads from a step that is not run must exist.
    """
    options = parse_key_values(run_args.dataset_option)
    if run_args.cache_dir:
        options.setdefault("cache_dir", run_args.cache_dir)
    for split in (run_args.train_split, run_args.eval_split):  # shapes data the run writes itself passes
        check_dataset(run_args.dataset, run_args.data_root, split, **options)
    preset_path = str(Path(run_args.output_dir) / "run_preset.yaml")
    made_earlier: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="cpfcte-run-") as folder:
        copy = Path(folder) / "run_preset.yaml"
        copy.write_text(yaml.safe_dump(preset, sort_keys=False))
        with named_preset(copy, str(preset_name)):
            for step in steps:
                if step.command is not None:
                    argv = [str(copy) if arg == preset_path else arg for arg in step.argv]
                    _check_step(step.command, parse_step_arguments(step.command, argv), made_earlier)
                made_earlier.add(str(step.directory))


def parse_step_arguments(command: str, argv: list[str]) -> tuple:
    """The dataclasses of `cpfcte-hf <command> <argv>`, as the command parses them."""
    import importlib

    from ..cli.main import COMMANDS

    return importlib.import_module(COMMANDS[command][0]).parse_arguments(argv)


def _check_step(command: str, instances: tuple, made_earlier: set[str]) -> None:
    """The checks `command` makes at its own start, on its resolved `instances`, before the run writes anything."""
    if command == "train":
        from ..stage1.train import check_training_inputs

        check_training_inputs(*instances, turn_off_bf16=BF16_OFF[command])
    elif command == "train-deeplab":
        from ..stage2.train import check_deeplab_inputs

        data_args, model_args, _, _, training_args = instances
        check_deeplab_inputs(
            data_args, model_args, training_args, turn_off_bf16=BF16_OFF[command], made_earlier=made_earlier
        )
    elif command in ("label", "push") and str(instances[0].model) not in made_earlier:
        check_model_option("model", instances[0].model)


def resolved_config(run_args: RunArguments, preset_name: str) -> dict:
    """
    `--print_config` of `run`: its own options, and the resolved settings of its two trainings under the current
    launch (`stage1`: `train`, `stage2`: `train-deeplab`), with how each realises its recipe's global batch on this
    many processes (`train_batch`: per-device batch x accumulation x processes). Nothing is written.
    """
    preset = apply_overrides(load_preset(preset_name), run_args.override)
    run_args = resolve_run_arguments(run_args, preset, preset_name)
    run_dir = Path(run_args.output_dir)
    resolved = resolved_run_preset(preset, run_args)
    preset_path = str(run_dir / "run_preset.yaml")
    config = {"RunArguments": dataclasses.asdict(run_args)}
    with tempfile.TemporaryDirectory(prefix="cpfcte-run-") as folder:
        copy = Path(folder) / "run_preset.yaml"
        copy.write_text(yaml.safe_dump(resolved, sort_keys=False))
        with named_preset(copy, str(preset_name)):
            for step in plan_steps(run_args, run_dir, Path(preset_path)):
                if step.name in ("stage1", "stage2"):
                    argv = [str(copy) if arg == preset_path else arg for arg in step.argv]
                    config[step.name] = json.loads(describe(*parse_step_arguments(step.command, argv)))
    return config


def format_summary(summary: dict) -> str:
    def percent(value):
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = ["", f"cpfcte-hf run: {summary['output_dir']} ({summary['status']})", ""]
    for name, entry in summary["steps"].items():
        lines.append(f"  {name:<22}{entry['status']:<9}{entry.get('seconds', 0):8.0f} s")
    if any(value is not None for value in summary["mean_iou"].values()):
        lines += ["", "mIoU % (background included):"]
        for name, value in summary["mean_iou"].items():
            lines.append(f"  {name:<26}{percent(value)}")
    return "\n".join(lines)


def failure_line(summary: dict) -> str | None:
    """The last line of a run that stopped at a step (None when it completed): which step, and what to do next."""
    failed = [(name, entry) for name, entry in summary["steps"].items() if entry["status"] == "failed"]
    if summary["status"] == "complete" or not failed:
        return None
    name, entry = failed[-1]
    return (
        f"the run stopped at step {name} (exit status {entry['exit_status']}; its error is above). The same command "
        "resumes the run once the cause is fixed."
    )


def parse_arguments(argv=None, prog: str = "cpfcte-hf run", description: str | None = None):
    return parse_args_with_presets((RunArguments,), argv, description=description or __doc__, command="run", prog=prog)


def _preset_name(argv) -> str | None:
    from ..utils.arguments import normalize_argv

    argv = normalize_argv(argv)
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return None


def run_from_argv(
    argv=None, default_preset: str | None = None, prog: str = "cpfcte-hf run", description: str | None = None
) -> tuple[int, dict | None]:
    """Parses `argv` (`--config` defaults to `default_preset`), runs, prints the summary: (exit status, summary)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_preset and _preset_name(argv) is None:
        argv = ["--config", default_preset, *argv]
    preset_name = _preset_name(argv)
    print_config = "--print_config" in argv
    (run_args,) = parse_arguments([arg for arg in argv if arg != "--print_config"], prog=prog, description=description)
    if preset_name is None:
        fail("--config PRESET is required (a packaged name: voc, coco, shapes, demo; or a YAML path).")
    if print_config:  # the trainings' resolved settings under this launch, nothing run or written
        try:
            print_once(json.dumps(resolved_config(run_args, preset_name), indent=2, default=str, sort_keys=True))
        except (OSError, ValueError) as error:
            print_error(error)
            return 2, None
        return 0, None
    try:
        summary = run(run_args, preset_name)
    except (OSError, ValueError) as error:  # bad arguments or inputs, or a mismatched step: one clear line
        print_error(error)
        return 2, None
    print(format_summary(summary), flush=True)
    failure = failure_line(summary)
    if failure:
        print_error(failure)
        return 3, summary
    return 0, summary


def main(argv=None) -> int:
    return run_from_argv(argv)[0]


__all__ = ["RunArguments", "STEPS", "collect_results", "format_summary", "headline", "main", "run", "run_from_argv"]
