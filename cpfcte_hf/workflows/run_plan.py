# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The plan of `cpfcte-hf run`: the preset it resolves for its steps (`resolved_run_preset`, written to
OUTPUT_DIR/run_preset.yaml) and its steps, each a `cpfcte-hf` command of the step engine (`plan_steps`)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..utils.arguments import COMMAND_SECTIONS, named_preset, parse_key_values
from .steps import Step


if TYPE_CHECKING:
    from .run import RunArguments


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


@contextlib.contextmanager
def preset_copy(preset: dict, preset_path: str | Path, preset_name: str):
    """
    The steps' arguments name `run_preset.yaml` (`preset_path`), which is written only when the run starts: within the
    block, the function this yields gives a step's arguments reading a temporary copy of `preset` instead, which
    messages call `preset_name` (`--print_config` and the checks resolve the steps before anything is written).
    """
    with tempfile.TemporaryDirectory(prefix="cpfcte-run-") as folder:
        copy = Path(folder) / "run_preset.yaml"
        copy.write_text(yaml.safe_dump(preset, sort_keys=False))
        with named_preset(copy, str(preset_name)):
            yield lambda argv: [str(copy) if arg == str(preset_path) else arg for arg in argv]


def _shapes_write_options(run_args: RunArguments) -> dict:
    return parse_key_values(run_args.dataset_option)


def plan_steps(run_args: RunArguments, run_dir: Path, preset_path: Path) -> list[Step]:
    """The steps of a run (see the module docstring), in order; `preset_path` is the run_preset.yaml they read."""
    config = ["--config", str(preset_path)]
    crf = [] if run_args.crf_workers is None else ["--crf_workers", str(run_args.crf_workers)]
    steps = []
    if run_args.dataset == "shapes" and run_args.data_root == str(run_dir / "data"):
        steps.append(Step("data", None, [], run_dir / "data", ["class_names.txt"]))
    steps += _training_steps(run_args, run_dir, config, crf, ("data",) if steps else ())
    steps += _evaluation_steps(run_args, run_dir, config, crf)
    steps.append(_hub_step(run_args, run_dir))
    if run_args.export:  # the pseudo-labels as a datasets dataset and/or COCO JSON; a failed export stops no step
        export = run_dir / "export"
        argv = [*config, "--labels", str(run_dir / "pseudo_labels"), "--format", *run_args.export]
        argv += ["--output_dir", str(export), "--overwrite", "--no_progress"]
        step = Step("export", "export", argv, export, ["export_summary.json"], ("pseudo_labels",), fatal=False)
        steps.insert([s.name for s in steps].index("pseudo_labels") + 1, step)  # right after the labelling
    return steps


def _training_steps(run_args: RunArguments, run_dir: Path, config: list, crf: list, first: tuple) -> list[Step]:
    """stage1 (`train`), pseudo_labels (`label` of the training split) and stage2 (`train-deeplab` on them)."""
    stage1, pseudo, stage2 = run_dir / "stage1", run_dir / "pseudo_labels", run_dir / "stage2"
    label = [*config, "--model", str(stage1), "--split", run_args.train_split, "--output_dir", str(pseudo)]
    return [
        Step("stage1", "train", [*config, "--output_dir", str(stage1)], stage1, ["config.json", "model.safetensors"], first),
        Step("pseudo_labels", "label", [*label, "--no_progress", *crf], pseudo, ["summary.json"], ("stage1",)),
        Step(
            "stage2",
            "train-deeplab",
            [*config, "--pseudo_labels", str(pseudo), "--output_dir", str(stage2), *crf],
            stage2,
            ["config.json", "model.safetensors", f"predictions/{run_args.eval_split}/report/metrics.json"],
            ("pseudo_labels",),
        ),
    ]  # fmt: skip


def _evaluation_steps(run_args: RunArguments, run_dir: Path, config: list, crf: list) -> list[Step]:
    """The held-out split scored: stage 1 with and without the tags (`label`), stage 2 at one scale, no CRF."""
    stage1, evaluation, held_out = run_dir / "stage1", run_dir / "eval", run_args.eval_split
    label = [*config, "--model", str(stage1), "--split", held_out, "--no_progress", "--output_dir"]
    return [
        Step(
            "eval_stage1_tagged",
            "label",
            [*label, str(evaluation / "stage1_tagged"), "--num_overlays", "8", *crf],
            evaluation / "stage1_tagged",
            ["report/metrics.json"],
            ("stage1",),
        ),
        Step(
            "eval_stage1_untagged",
            "label",
            [*label, str(evaluation / "stage1_untagged"), "--no_use_image_labels", "--no_crf"],
            evaluation / "stage1_untagged",
            ["report/metrics.json"],
            ("stage1",),
        ),
        Step(
            "eval_stage2",
            "train-deeplab",
            [*config, "--do_train", "false", "--model_name_or_path", str(run_dir / "stage2"), "--test_scales", "1.0",
             "--test_crf", "false", "--output_dir", str(evaluation / "stage2"), "--num_overlays", "8"],
            evaluation / "stage2",
            [f"predictions/{held_out}/report/metrics.json"],
            ("stage2",),
        ),
    ]  # fmt: skip


def _hub_step(run_args: RunArguments, run_dir: Path) -> Step:
    """`push --dry_run` of the stage-1 checkpoint with every results file of the run; its failure stops nothing."""
    evaluation = run_dir / "eval"
    results = [run_dir / "pseudo_labels", evaluation / "stage1_tagged", run_dir / "stage2",
               evaluation / "stage1_untagged", evaluation / "stage2"]  # fmt: skip
    argv = ["--model", str(run_dir / "stage1"), "--repo_id", run_args.repo_id, "--dry_run", str(run_dir / "hub")]
    after = ("pseudo_labels", "stage2", "eval_stage1_tagged", "eval_stage1_untagged", "eval_stage2")
    argv += ["--overwrite", "--results", *map(str, results)]
    return Step("hub", "push", argv, run_dir / "hub", ["README.md"], after, fatal=False)


__all__ = ["plan_steps", "resolved_run_preset"]
