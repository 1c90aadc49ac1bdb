# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The cells of `cpfcte-hf reproduce`: one stage-1 training of a variant at a seed (`cpfcte-hf train`), the
pseudo-labels of a split and their mIoU (`cpfcte-hf label`) and, for tables 2 and 3, a DeepLab-v2 trained on them
(`cpfcte-hf train-deeplab`). Each is a step of the step engine (`cpfcte_hf.workflows.steps`) whose record is
`CELL/<step>.done.json`; the cell's folder `OUTPUT/cells/<variant>-seed<seed>-<hash>/` is named by a hash of its
stage-1 settings, so that changed stage-1 settings make a new cell."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..stage1.arguments import TRAINER_OPTIONS, DataArguments, ModelArguments
from ..utils.arguments import parse_args_with_presets, parse_key_values, resolve_preset
from ..utils.interrupts import Interrupted, interrupting_signal
from ..utils.io import atomic_write_text
from .steps import RESUMES, Step, execute, read_record, step_settings


if TYPE_CHECKING:
    from .reproduce import Reproduction

TRAIN_ARGUMENTS = (ModelArguments, DataArguments, TRAINER_OPTIONS)  # `cpfcte-hf train`'s

# Overrides of the dataset's CPF-CTE preset for each cell. "vit-pcm" and "plus" use their own presets where the
# dataset has them (voc, coco); the shapes set has one schedule, so they are these overrides of it.
VARIANTS = {
    "cpf-cte": {},
    "baseline": {"use_class_tokens": False, "use_context_fusion": False},
    "class-tokens": {"use_context_fusion": False},
    "context-fusion": {"use_class_tokens": False},
    "avg": {"pooling": "avg"},
    "max": {"pooling": "max"},
    "vit-pcm": {
        "use_class_tokens": False,
        "context_fusion_projection": False,
        "pooling": "max",
        "equivariance_loss_weight": 1.0,
    },
    "plus": {"equivariance_loss_weight": 1.0},
}


def variant_overrides(variant: str) -> dict:
    """The preset overrides of a cell: `VARIANTS[variant]`, or `top_k=K` for the K sweep (CPF-CTE with that K)."""
    if variant.startswith("top_k="):
        value = float(variant.split("=", 1)[1])
        return {"top_k": int(value) if value.is_integer() else value}
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {sorted(VARIANTS)} or top_k=K.")
    return dict(VARIANTS[variant])


@dataclass
class DatasetRecipe:
    """What the tables use on one dataset: presets, splits and the pseudo-label resolution."""

    preset: str
    deeplab_preset: str | None
    score_split: str
    deeplab_split: str
    eval_split: str
    inference_size: int
    variant_presets: dict = field(default_factory=dict)
    tables: tuple[str, ...] = ("1", "2", "4", "5")


RECIPES = {
    "voc": DatasetRecipe(
        "voc", "deeplab_voc", "train", "train_aug", "val", 960, {"vit-pcm": "voc-vitpcm", "plus": "voc-plus"}
    ),
    "coco": DatasetRecipe(
        "coco",
        "deeplab_coco",
        "train",
        "train",
        "val",
        960,
        {"vit-pcm": "coco-vitpcm", "plus": "coco-plus"},
        ("1", "3", "4", "5"),
    ),  # fmt: skip
    # Pseudo-labels of the 200 validation images (the training images are many more, and the tables only compare).
    "shapes": DatasetRecipe(
        "shapes-reproduce", "deeplab_shapes", "val", "train", "val", 192, {}, ("1", "2", "4", "5")
    ),
}


# A preset by name or path: the one lookup of the command line (kept under this name for 0.1.0's callers).
preset_path = resolve_preset


class StepFailed(RuntimeError):
    """A cell's command ended with a non-zero exit status (its error is above)."""


def _flag(key: str, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *[str(v) for v in value]]
    if isinstance(value, bool):
        value = str(value).lower()
    return [f"--{key}", str(value)]


def _command(command: str, argv: list[str]) -> str:
    """The `cpfcte-hf` command line a cell step runs (what tables.md lists)."""
    return " ".join(["cpfcte-hf", command, *[shlex.quote(a) for a in argv]])


def _mean_ious(path: Path) -> dict:
    """`{prediction set (lower case): mIoU %}` of a report's metrics.json ({} without one)."""
    report = read_record(path) or {}
    return {
        name.lower(): None if entry.get("mean_iou") is None else 100.0 * entry["mean_iou"]
        for name, entry in report.get("predictions", {}).items()
    }


class Cell:
    """One stage-1 training of a variant at a seed, its pseudo-labels and scores, and optionally its stage 2."""

    def __init__(self, runner: Reproduction, variant: str, seed: int):
        recipe = runner.recipe
        self.runner, self.variant, self.seed = runner, variant, seed
        preset = recipe.variant_presets.get(variant)
        overrides = {} if preset else variant_overrides(variant)
        self.preset = str(preset_path(preset or runner.preset))
        train_argv = ["--config", self.preset]
        if runner.data_root:
            train_argv += ["--data_root", runner.data_root]
        for key, value in {**overrides, **runner.overrides, "seed": seed}.items():
            train_argv += _flag(key, value)
        # The preset file's content is part of the settings: an edited preset makes a new cell.
        settings = {
            "train_argv": train_argv,
            "preset_text": Path(self.preset).read_text(),
            "inference_size": recipe.inference_size,
            "score_split": recipe.score_split,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        self.directory = runner.output_dir / "cells" / f"{variant}-seed{seed}-{digest}"
        self.settings = settings
        self.train_argv = [*train_argv, "--output_dir", str(self.directory / "model")]
        self.commands: list[str] = [_command("train", self.train_argv)]
        self.fingerprints: dict[str, str] = {}

    def _run(self, name: str, command: str, argv: list[str], outputs: list[str], after: tuple[str, ...]) -> dict:
        """Runs (or skips, resumes, refuses) the cell's step `name` through the step engine; its entry."""
        printable = _command(command, argv)
        if printable not in self.commands:
            self.commands.append(printable)
        cell = self.directory.name
        step = Step(
            f"{cell}/{name}", command, argv, Path(argv[argv.index("--output_dir") + 1]), outputs,
            tuple(f"{cell}/{a}" for a in after), record=self.directory / f"{name}.done.json",
        )  # fmt: skip
        runner = self.runner
        settings = step_settings(command, argv, runner.output_dir)
        entry = execute(step, settings, self.fingerprints, overwrite=runner.overwrite, tag="reproduce")
        if entry["status"] == "interrupted":  # Ctrl-C or SIGTERM in the step: stop reproduce as well
            raise Interrupted(interrupting_signal(entry["exit_status"]), f"in step {step.name}; the same {RESUMES}")
        if entry["status"] == "failed":
            raise StepFailed(f"step {step.name} failed with exit status {entry['exit_status']}: {printable}")
        (runner.reused if entry["status"] == "skipped" else runner.ran).append(step.name)
        return entry

    def train(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / "settings.json", json.dumps(self.settings, indent=2) + "\n")
        self._run("train", "train", self.train_argv, ["config.json", "model.safetensors"], ())

    def _data_options(self, data_args=None) -> tuple[str, str | None, dict]:
        """The cell's dataset, data root and loader options, from its stage-1 options `data_args` (parsed from its
        arguments when not given)."""
        if data_args is None:
            _, data_args, _ = parse_args_with_presets(
                TRAIN_ARGUMENTS,
                [*self.train_argv, "--report_to", "none", "--use_cpu", "true", "--bf16", "false"],
            )
        options = parse_key_values(data_args.dataset_option)
        if data_args.cache_dir:
            options["cache_dir"] = data_args.cache_dir
        return data_args.dataset, data_args.data_root, options

    def pseudo_labels(self, split: str) -> dict:
        """Pseudo-labels of `split` (BPM and CRF) and, where it has masks, their mIoU: `{"bpm": %, "crf": %}`."""
        out = self.directory / f"pseudo-{split}"
        dataset, data_root, options = self._data_options()
        argv = ["--model", str(self.directory / "model"), "--dataset", dataset, "--split", split]
        if data_root:
            argv += ["--data_root", data_root]
        for key, value in options.items():
            argv += ["--dataset_option", f"{key}={value}"]
        argv += ["--size", str(self.runner.recipe.inference_size), "--output_dir", str(out), "--no_progress"]
        entry = self._run(f"pseudo-{split}", "label", argv, ["summary.json"], ("train",))
        summary = read_record(out / "summary.json") or {}
        return {
            "seconds": entry["seconds"],
            "failed": summary.get("failed"),
            **_mean_ious(out / "report" / "metrics.json"),
        }

    def deeplab_argv(self) -> list[str]:
        """The `cpfcte-hf train-deeplab` arguments of this cell's stage 2 (on its pseudo-labels of the train split)."""
        recipe = self.runner.recipe
        dataset, data_root, options = self._data_options()
        argv = ["--config", str(preset_path(self.runner.deeplab_preset or recipe.deeplab_preset))]
        argv += ["--dataset", dataset, "--train_split", recipe.deeplab_split, "--eval_split", recipe.eval_split]
        if data_root:
            argv += ["--data_root", data_root]
        loader = {key: value for key, value in options.items() if key != "cache_dir"}
        if loader:
            argv += ["--dataset_option", *[f"{key}={value}" for key, value in loader.items()]]
        if "cache_dir" in options:
            argv += ["--cache_dir", str(options["cache_dir"])]
        for key, value in {**self.runner.deeplab_overrides, "seed": self.seed}.items():
            argv += _flag(key, value)
        pseudo = self.directory / f"pseudo-{recipe.deeplab_split}"
        return [*argv, "--pseudo_labels", str(pseudo), "--output_dir", str(self.directory / "deeplab")]

    def deeplab(self) -> dict:
        """DeepLab-v2 trained on this cell's CRF pseudo-labels of the training split, scored on the eval split."""
        recipe = self.runner.recipe
        outputs = ["config.json", "model.safetensors"]
        entry = self._run(
            "deeplab", "train-deeplab", self.deeplab_argv(), outputs, (f"pseudo-{recipe.deeplab_split}",)
        )
        scores = _mean_ious(self.directory / "deeplab" / "predictions" / recipe.eval_split / "report" / "metrics.json")
        fused = scores.get("ms+crf", scores.get("ms"))
        return {"seconds": entry["seconds"], "deeplab": fused}


__all__ = ["RECIPES", "VARIANTS", "Cell", "DatasetRecipe", "StepFailed", "preset_path", "variant_overrides"]
