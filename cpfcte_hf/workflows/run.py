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
    stage2                `train-deeplab` (= `train-segmenter`) on pseudo_labels/crf, then its multi-scale + CRF
                          evaluation: stage2/ (DeepLab-v2, or the segmenter the preset names: `model_type: segformer`)
    eval_stage1_tagged    `label` of the held-out split with its tags (BPM, CRF): eval/stage1_tagged/
    eval_stage1_untagged  `label --no_use_image_labels --no_crf` of the held-out split: eval/stage1_untagged/
    eval_stage2           `train-deeplab --do_train false` at one scale, no CRF: eval/stage2/
    export                (with --export datasets coco, right after pseudo_labels) `export` of them: export/
    hub                   `push --dry_run` of the stage-1 checkpoint with the results: hub/

and OUTPUT_DIR/run_summary.json, which names the stage-2 model trained (`stage2_model`). The preset's flat keys are
stage-1 (`train`) settings; its `label:` and `train_deeplab:` sections set the other steps (`train_deeplab: {base:
deeplab_voc}`; `train_segmenter:` is the same section under its other name, e.g. `train_segmenter: {base:
segformer_shapes}` for a SegFormer stage 2), and `run:` this command's options. The resolved preset is written to OUTPUT_DIR/run_preset.yaml and every step reads it. A run that cannot
start (missing data, an unknown key, a model that is not there, bf16 on a machine without it) is refused in one line
before anything is written.

Every step writes a record next to its folder (`stage1.step.json`, ...): its resolved settings and their fingerprint (SHA-256), which
includes the fingerprints of the steps it reads from. A rerun skips a step whose record is complete and whose
fingerprint matches, resumes one that was started with the same settings, and refuses one made with other
settings (naming the settings that differ) unless `--overwrite`, which deletes that step's folder and redoes it.
Ctrl-C or SIGTERM stops the step at work (its command ends with one line), runs no step after it, writes the summary
(`interrupted at STEP`) and exits with 130 / 143; the same command then resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..cli.commands.export import EXPORT_FORMATS
from ..data.arguments import DataSourceArguments
from ..utils.arguments import (
    COMMAND_ALIASES,
    COMMAND_SECTIONS,
    RepeatableList,
    config_option,
    describe,
    fail,
    load_preset,
    parse_args_with_presets,
    parse_key_values,
    print_error,
    print_once,
)
from ..utils.extras import missing_extra
from ..utils.help import answer_front_door
from ..utils.interrupts import stop_on_signals
from ..utils.io import atomic_write_text
from ..utils.openmp import set_openmp_wait
from .run_checks import BF16_OFF, check_run_inputs
from .run_plan import _shapes_write_options, plan_steps, preset_copy, resolved_run_preset
from .run_results import (
    collect_results,
    export_record,
    failure_line,
    format_summary,
    headline,
    run_exit_status,
    stage2_model,
)
from .steps import (
    UNFINGERPRINTED,
    Step,
    StepMismatchError,
    execute,
    fingerprint,
    is_main_process,
    parse_step_arguments,
    read_step_record,
    say,
    settings_difference,
    step_settings,
)


@dataclass
class RunArguments(DataSourceArguments):
    """Options of `cpfcte-hf run`; stage settings come from the preset (see the module docstring)."""

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the run (default: outputs/<preset>).",
            "aliases": ["--out", "--demo_dir", "--demo-dir"],
        },
    )
    train_split: str | None = field(default=None, metadata={"help": "Split that is trained on and pseudo-labelled."})
    eval_split: str | None = field(default=None, metadata={"help": "Held-out split with ground truth (default val)."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub id written on the card (default: local/<name>)."})
    override: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Step settings KEY=VALUE ... on top of the preset: top_k=4 (stage 1), label.size=128, "
            "train_deeplab.max_steps=300.",
            "action": RepeatableList,
        },
    )
    steps: list[str] = field(default_factory=list, metadata={"help": "Run only these steps (default: all)."})
    overwrite: bool = field(
        default=False, metadata={"help": "Redo steps whose outputs were made with other settings."}
    )
    crf_workers: int | None = field(default=None, metadata={"help": "CRF processes (default: all CPUs; 0 = serial)."})
    export: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"Export the pseudo-labels ({', '.join(EXPORT_FORMATS)}) to OUTPUT_DIR/export/ "
            "(`cpfcte-hf export`).",
            "choices": EXPORT_FORMATS,
        },
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


# ------------------------------------------------------------------------------------------------------ running


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


def execute_step(step: Step, run_args: RunArguments, run_dir: Path, fingerprints: dict, data_options: dict) -> dict:
    """Runs, resumes, skips or refuses `step` on the step engine (`steps.execute`); returns its entry of
    run_summary.json."""
    if step.command is None:  # the shapes data, written here (by the main process)
        settings, printable = {"write_shapes_voc": data_options}, f"write_shapes_voc {data_options}"

        def action(argv):
            return _on_main_process(lambda: _run_data_step(run_args, step.directory, data_options))

    else:
        settings, printable, action = step_settings(step.command, step.argv, run_dir), None, None
        if step.command in MAIN_PROCESS_ONLY:

            def action(argv):
                from ..cli.main import run_command

                return _on_main_process(lambda: run_command(step.command, argv))

    return execute(step, settings, fingerprints, overwrite=run_args.overwrite, action=action, printable=printable)


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
        section = COMMAND_ALIASES.get(section, section)  # `train_segmenter.max_steps` is `train_deeplab.max_steps`
        if not dot:
            preset[key] = value
        elif section in COMMAND_SECTIONS:
            preset.setdefault(section, {})[name] = value
        else:
            raise ValueError(f"--override {key}: {section!r} is no command section ({', '.join(COMMAND_SECTIONS)}).")
    return preset


def plan_run(run_args: RunArguments, preset_name: str) -> tuple[RunArguments, dict, list[Step], dict]:
    """The run's resolved options, its resolved preset (what run_preset.yaml holds), its steps (those of --steps)
    and the shapes data step's options ({} without one); a bad --steps or --export is a ValueError."""
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
        raise ValueError(f"--steps export: say which formats with --export ({', '.join(EXPORT_FORMATS)}).")
    missing = missing_extra(run_args.export, option="--export")
    if missing:  # before stage 1 trains, not at the export step after it
        raise ValueError(missing)
    steps = [step for step in plan_steps(run_args, run_dir, run_dir / "run_preset.yaml") if step.name in selected]
    return run_args, resolved_run_preset(preset, run_args), steps, data_options


def run(run_args: RunArguments, preset_name: str) -> dict:
    """
    Checks the run (`check_run_inputs`: nothing is written when it cannot start), runs the steps (see the module
    docstring) and writes OUTPUT_DIR/run_summary.json; returns the summary.
    """
    run_args, resolved, steps, data_options = plan_run(run_args, preset_name)
    run_dir = Path(run_args.output_dir)
    check_run_inputs(run_args, resolved, steps, preset_name)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "run_preset.yaml", yaml.safe_dump(resolved, sort_keys=False))
    # Every step reads run_preset.yaml: the other processes wait until the main one has written it (a run without
    # the shapes data step, whose broadcast waits too, would otherwise let a fast rank read a missing preset).
    from ..utils.distributed import distributed_state, shared_process_group

    distributed_state().wait_for_everyone()

    summary = {"preset": str(preset_name), "output_dir": str(run_dir), "steps": {}, "status": "complete"}
    fingerprints: dict[str, str] = {}
    start = time.perf_counter()
    # SIGTERM (a scheduler, `docker stop`, torchrun passing it on) stops a step as Ctrl-C does: the step's command ends
    # with one line and exit status 143, and the run with its summary instead of dying mid-write.
    with shared_process_group(), stop_on_signals():
        for step in steps:
            entry = execute_step(step, run_args, run_dir, fingerprints, data_options)
            summary["steps"][step.name] = entry
            if entry["status"] == "interrupted":  # Ctrl-C or SIGTERM: no step after it, whatever its kind
                summary["status"] = f"interrupted at {step.name}"
                break
            if entry["status"] == "failed":
                if step.fatal:
                    summary["status"] = f"failed at {step.name}"
                    break
                say(f"[run] {step.name} failed (exit status {entry['exit_status']}); the run goes on.")
    summary["seconds_total"] = round(time.perf_counter() - start, 3)
    summary["results"] = collect_results(run_dir, run_args.eval_split)
    summary["mean_iou"] = headline(summary["results"])
    summary["stage2_model"] = stage2_model(run_dir)
    if run_args.export:
        summary["export"] = export_record(run_dir / "export", run_args.export)
    summary["arguments"] = dataclasses.asdict(run_args)
    if is_main_process():
        atomic_write_text(run_dir / "run_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


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
    preset_path = run_dir / "run_preset.yaml"
    config = {"RunArguments": dataclasses.asdict(run_args)}
    with preset_copy(resolved, preset_path, preset_name) as reading_copy:
        for step in plan_steps(run_args, run_dir, preset_path):
            if step.name in ("stage1", "stage2"):
                instances = parse_step_arguments(step.command, reading_copy(step.argv))
                config[step.name] = json.loads(describe(*instances))
    return config


def parse_arguments(argv=None, prog: str = "cpfcte-hf run", description: str | None = None, early_check=None):
    return parse_args_with_presets(
        (RunArguments,), argv, description=description or __doc__, command="run", prog=prog, early_check=early_check
    )


def check_run_early(run_args: RunArguments, preset_name: str) -> None:
    """The checks of a run that need no library (`check_run_inputs(light=True)`: the data, the steps' preset keys,
    their inputs from outside the run), on the options the front door builds: before transformers is imported."""
    run_args, resolved, steps, _ = plan_run(run_args, preset_name)
    check_run_inputs(run_args, resolved, steps, preset_name, light=True)


def _preset_name(argv) -> str | None:
    return config_option(argv).config


def run_from_argv(
    argv=None, default_preset: str | None = None, prog: str = "cpfcte-hf run", description: str | None = None
) -> tuple[int, dict | None]:
    """Parses `argv` (`--config` defaults to `default_preset`), runs, prints the summary: (exit status, summary)."""
    # The steps run in this process, and most of a run's time is its two trainings: OpenMP's short spin, set before
    # anything loads torch (the `label` step pays for it, the trainings gain more: README, Performance).
    set_openmp_wait(training=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_preset and _preset_name(argv) is None:
        argv = ["--config", default_preset, *argv]
    preset_name = _preset_name(argv)
    print_config = "--print_config" in argv
    options = [arg for arg in argv if arg != "--print_config"]
    answer_front_door(options, (RunArguments,), prog, description or __doc__)  # help, misspelt options, bad values
    if preset_name is None:  # before transformers is imported for the real parse
        fail("--config PRESET is required (a packaged name: voc, coco, shapes, demo; or a YAML path).")
    early_check = None if print_config else (lambda light_args: check_run_early(light_args, preset_name))
    try:
        (run_args,) = parse_arguments(options, prog=prog, description=description, early_check=early_check)
    except (OSError, ValueError) as error:  # the data, the steps' settings and inputs: before transformers loads
        print_error(error)
        return 2, None
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
    failure = failure_line(summary)
    if is_main_process():  # every process of a launch ran the steps; one prints what they did
        print(format_summary(summary), flush=True)
        if failure:
            print_error(failure)
    return run_exit_status(summary), summary


def main(argv=None) -> int:
    return run_from_argv(argv)[0]


__all__ = [
    "BF16_OFF",
    "RunArguments",
    "STEPS",
    "UNFINGERPRINTED",
    "Step",
    "StepMismatchError",
    "check_run_inputs",
    "collect_results",
    "execute_step",
    "export_record",
    "failure_line",
    "fingerprint",
    "format_summary",
    "headline",
    "main",
    "parse_step_arguments",
    "plan_steps",
    "read_step_record",
    "run",
    "run_from_argv",
    "settings_difference",
    "stage2_model",
    "step_settings",
]
