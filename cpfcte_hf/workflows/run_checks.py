# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The checks `cpfcte-hf run` makes before it writes anything: the data, then each step's settings as its command
resolves them (`check_run_inputs`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..data import check_dataset
from .run_plan import preset_copy
from .steps import Step, check_step, parse_step_arguments


if TYPE_CHECKING:
    from .run import RunArguments


# How a run turns bf16 off for the step that trains with the recipe of that command.
BF16_OFF = {"train": "--override bf16=false", "train-deeplab": "--override train_deeplab.bf16=false"}


def check_run_inputs(
    run_args: RunArguments, preset: dict, steps: list[Step], preset_name: str, light: bool = False
) -> None:
    """
    Refuses a run that cannot start before it writes anything (`run_preset.yaml`, a folder, a step record) or
    builds a model, reporting the first problem in one line: the data (root, split files, tags; `check_dataset`),
    then each step's settings as its command resolves them from `preset` (unknown keys, refused values), the
    models it reads from outside the run, and bf16 on a machine without it. What an earlier step of the run makes
    (a checkpoint, the pseudo-labels) is not checked; what a step reads from a step that is not run must exist.

    With `light`, the checks that need no library, on the steps' options as their front doors build them
    (`parse_step_arguments(light=True)`): `cpfcte-hf run` makes them before transformers is imported, and all of
    them again after.
    """
    options = run_args.loader_options()
    for split in (run_args.train_split, run_args.eval_split):  # shapes data the run writes itself passes
        check_dataset(run_args.dataset, run_args.data_root, split, **options)
    made_earlier: set[str] = set()
    with preset_copy(preset, Path(run_args.output_dir) / "run_preset.yaml", preset_name) as reading_copy:
        for step in steps:
            if step.command is not None:
                instances = parse_step_arguments(step.command, reading_copy(step.argv), light=light)
                if instances is not None:
                    turn_off_bf16 = BF16_OFF.get(step.command, "--bf16 false")
                    check_step(
                        step.command, instances, light=light, turn_off_bf16=turn_off_bf16, made_earlier=made_earlier
                    )
            made_earlier.add(str(step.directory))


__all__ = ["BF16_OFF", "check_run_inputs"]
