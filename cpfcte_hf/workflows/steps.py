# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one step engine under `cpfcte-hf run` and `cpfcte-hf reproduce`.

A step is a `cpfcte-hf` command with its arguments, the folder it writes, the files a complete run of it leaves there,
and the steps it reads from (`Step`). Its record (JSON; `run`: next to its folder, `stage1.step.json`; `reproduce`:
in its cell, `train.done.json`) holds its resolved settings (`step_settings`: the command's dataclasses as it parses
them) and their fingerprint (SHA-256 over the settings and the fingerprints of the steps it reads from). `execute`

- skips a step whose record is complete, with the same fingerprint, and whose outputs are there;
- resumes one started with the same settings (a training from its last complete checkpoint, `label` from the masks
  already written);
- refuses one made with other settings, naming the settings that differ (`StepMismatchError`), and one whose record
  has no fingerprint (written by an older cpfcte-hf), unless `overwrite`, which deletes its folder and record first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ..stage1.arguments import check_data_and_model
from ..stage2.checks import check_stage2_inputs
from ..utils.arguments import check_model_option
from ..utils.interrupts import interrupting_signal
from ..utils.io import atomic_write_text


# What the same command does after a stop (said by run's and reproduce's last line): "The same " + RESUMES.
RESUMES = "command resumes: finished steps are skipped, a training continues from its last complete checkpoint"


STEP_RECORD_SUFFIX = ".step.json"
# Settings that do not change a step's outputs (where they go, how fast, how verbose): left out of fingerprints.
UNFINGERPRINTED = {
    "output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "overwrite", "overwrite_output_dir",
    "crf_workers", "progress", "disable_tqdm", "dataloader_num_workers", "report_to", "logging_steps", "device",
    "num_overlays", "print_config", "report_html",
}  # fmt: skip
# Commands that continue from their last complete checkpoint when their step was started before.
RESUMED_FROM_CHECKPOINT = ("train", "train-deeplab", "train-segmenter")


class StepMismatchError(ValueError):
    """A step's folder holds outputs made with other settings (or with settings nobody recorded)."""


# ---------------------------------------------------------------------------------------------------- fingerprints


def _strip(value):
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key not in UNFINGERPRINTED}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


# Commands whose options can be built without transformers (`parse_arguments(argv, light=True)`).
LIGHT_PARSE = ("train", "label", "train-deeplab", "train-segmenter", "push")


def parse_step_arguments(command: str, argv: list[str], light: bool = False) -> tuple | None:
    """The dataclasses of `cpfcte-hf <command> <argv>`, as the command parses them. With `light`, as its front door
    builds them without transformers (Trainer's options: a namespace), or None where it cannot (see
    `parse_args_with_presets`; a command not in `LIGHT_PARSE`)."""
    import importlib

    from ..cli.main import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    if light:
        return module.parse_arguments(argv, light=True) if command in LIGHT_PARSE else None
    return module.parse_arguments(argv)


def check_step(
    command: str,
    instances: tuple,
    *,
    light: bool = False,
    turn_off_bf16: str = "--bf16 false",
    made_earlier: Collection[str] = (),
) -> None:
    """
    The checks `command` makes at its own start, on its resolved `instances` (`parse_step_arguments`), before a
    workflow writes anything: with `light`, those its front door makes without the libraries (`check_data_and_model`,
    `check_stage2_inputs`), else all of them (`check_training_inputs`, `check_deeplab_inputs`: bf16 included, which
    the caller's `turn_off_bf16` says how to turn off). Paths in `made_earlier` are made by an earlier step.
    """
    if command == "train":
        if light:
            check_data_and_model(*instances)
            return
        from ..stage1.train import check_training_inputs

        check_training_inputs(*instances, turn_off_bf16=turn_off_bf16)
    elif command in ("train-deeplab", "train-segmenter"):
        data_args, model_args, _, _, training_args = instances
        if light:
            check_stage2_inputs(data_args, model_args, training_args.do_train, made_earlier=made_earlier)
            return
        from ..stage2.train import check_deeplab_inputs

        check_deeplab_inputs(
            data_args, model_args, training_args, turn_off_bf16=turn_off_bf16, made_earlier=made_earlier
        )
    elif command in ("label", "push") and str(instances[0].model) not in made_earlier:
        check_model_option("model", instances[0].model)


def step_settings(command: str, argv: list[str], run_dir: Path) -> dict:
    """The resolved settings of `cpfcte-hf <command> <argv>` (its dataclasses), paths inside `run_dir` relative."""
    resolved = {}
    for instance in parse_step_arguments(command, argv):
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


# --------------------------------------------------------------------------------------------------- the records


@dataclass
class Step:
    """A `cpfcte-hf` command (None: a step of the workflow itself, e.g. `run`'s shapes data), its arguments, the folder
    it writes, the files (relative to it) that a complete run leaves, and the names of the steps it reads from."""

    name: str
    command: str | None
    argv: list[str]
    directory: Path
    outputs: list[str]
    after: tuple[str, ...] = ()
    fatal: bool = True
    record: Path | None = None  # where its record is kept (default: next to its folder, `<folder>.step.json`)

    @property
    def record_path(self) -> Path:
        return self.record or step_record_path(self.directory)

    def complete(self) -> bool:
        return all((self.directory / output).is_file() for output in self.outputs)


def step_record_path(directory: Path) -> Path:
    """A step's record sits next to its folder (`stage1/` -> `stage1.step.json`), so the folder is the command's."""
    return directory.with_name(directory.name + STEP_RECORD_SUFFIX)


def read_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_step_record(directory: Path) -> dict | None:
    """The record of the step whose folder is `directory` (`run`'s layout), or None."""
    return read_record(step_record_path(directory))


def is_main_process() -> bool:
    """Rank 0 of a launcher (`RANK`), or the only process: the one that writes the run's own files and log."""
    return int(os.environ.get("RANK", "0")) == 0


def write_record(path: Path, record: dict) -> None:
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def write_step_record(directory: Path, record: dict) -> None:
    """Writes the record of the step whose folder is `directory` (`run`'s layout)."""
    write_record(step_record_path(directory), record)


def say(message: str) -> None:
    """A line of the workflow's log, from the main process only."""
    if is_main_process():
        print(message, flush=True)


# ------------------------------------------------------------------------------------------------------ running


def reset_accelerate_state() -> None:
    """Each step builds its own `TrainingArguments`; keep the process group, forget the previous step's settings."""
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    except Exception:  # noqa: BLE001 - an accelerate without this helper: nothing to reset
        pass


def has_complete_checkpoint(directory: Path) -> bool:
    from ..utils.trainer_mixins import last_complete_checkpoint

    return directory.is_dir() and last_complete_checkpoint(str(directory)) is not None


def printable_command(step: Step) -> str:
    return "cpfcte-hf " + " ".join([step.command, *step.argv]) if step.command else step.name


def _usable_record(step: Step, settings: dict, digest: str, overwrite: bool, tag: str) -> dict | None:
    """The step's record if it was made with these settings; a record of other settings is refused, or deleted with
    the step's folder under `overwrite`."""
    record = read_record(step.record_path)
    if record is None or record.get("fingerprint") == digest:
        return record
    if not overwrite:
        if "fingerprint" not in record:
            why = f"was made by an older cpfcte-hf that did not record its settings ({step.record_path.name})"
        else:
            why = f"was made with other settings ({settings_difference(record.get('settings', {}), settings)})"
        raise StepMismatchError(
            f"step {step.name}: {step.directory} {why}. Pass --overwrite to redo it and the steps after it, or "
            "choose another --output_dir."
        )
    say(f"[{tag}] {step.name}: settings changed, --overwrite: removing {step.directory}")
    if is_main_process():
        shutil.rmtree(step.directory, ignore_errors=True)
        step.record_path.unlink(missing_ok=True)
    return None


def execute(
    step: Step,
    settings: dict,
    fingerprints: dict[str, str],
    *,
    overwrite: bool = False,
    tag: str = "run",
    action: Callable[[list[str]], int] | None = None,
    printable: str | None = None,
) -> dict:
    """
    Runs, resumes, skips or refuses `step` (see the module docstring) with its resolved `settings`; `fingerprints`
    holds those of the steps before it and gets this one's. `action(argv)` runs it and returns its exit status
    (default: the `cpfcte-hf` command in this process). Returns the step's entry: `directory`, `command`,
    `fingerprint`, `status` ("ran", "skipped", "failed", or "interrupted" when it was stopped by SIGINT or SIGTERM:
    exit status 130 / 143), `seconds` (and `exit_status` when it failed or was interrupted). Its record stays
    "started" unless it ran to the end, so that the next run resumes or redoes it.
    """
    after = {name: fingerprints[name] for name in step.after if name in fingerprints}
    digest = fingerprints[step.name] = fingerprint(settings, after)
    printable = printable or printable_command(step)
    entry = {"directory": str(step.directory), "command": printable, "fingerprint": digest}
    record = _usable_record(step, settings, digest, overwrite, tag)
    if record is not None and record.get("status") == "complete" and step.complete():
        say(f"[{tag}] {step.name}: done before with the same settings, skipped ({step.directory})")
        return {**entry, "status": "skipped", "seconds": 0.0}

    resume = []
    if step.command in RESUMED_FROM_CHECKPOINT and has_complete_checkpoint(step.directory):
        resume = ["--resume_from_checkpoint", "last"]
    argv = [*step.argv, *resume]
    say(f"\n=== [{tag}] {step.name}: {' '.join([printable, *resume])} ===")
    base = {"step": step.name, "fingerprint": digest, "after": after, "settings": settings, "command": printable}
    write_record(step.record_path, {**base, "status": "started"})
    start = time.perf_counter()
    reset_accelerate_state()
    if action is None:
        from ..cli.main import run_command

        status = run_command(step.command, argv)
    else:
        status = action(argv)
    seconds = round(time.perf_counter() - start, 3)
    say(f"=== [{tag}] {step.name}: {seconds:.0f} s, exit status {status} ===")
    if status != 0:
        stopped = "interrupted" if interrupting_signal(status) is not None else "failed"
        return {**entry, "status": stopped, "exit_status": status, "seconds": seconds}
    write_record(step.record_path, {**base, "status": "complete", "seconds": seconds})
    return {**entry, "status": "ran", "seconds": seconds}


__all__ = [
    "RESUMES",
    "Step",
    "StepMismatchError",
    "execute",
    "fingerprint",
    "read_step_record",
    "settings_difference",
    "step_record_path",
    "step_settings",
    "write_step_record",
]
