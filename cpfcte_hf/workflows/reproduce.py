# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's tables as one command: train what each table needs, score it, and write our numbers beside the paper's.

    cpfcte-hf reproduce --dataset voc --data_root data/VOCdevkit/VOC2012 --tables 1 2 4 5 --seeds 3
    cpfcte-hf reproduce --dataset shapes --data_root data/shapes --tables 4 5 --seeds 3

Every table is made of *cells*: one stage-1 training (a preset plus a few overrides, one seed), the pseudo-labels of
a split and their mIoU; tables 2 and 3 add a DeepLab-v2 (stage 2) trained on the full model's pseudo-labels.

| table | rows (cells)                                                         | our number                        |
|-------|----------------------------------------------------------------------|-----------------------------------|
| 1     | CPF-CTE, + ViT-PCM, + CPF-CTE with L_ET ("plus")                     | pseudo-label mIoU, BPM and CRF    |
| 2, 3  | CPF-CTE -> DeepLab-v2 (3: COCO, with its pseudo-label mIoU)           | val mIoU, multi-scale + CRF       |
| 4     | baseline / + class tokens / + context fusion / both, ViT-PCM, plus   | CRF pseudo-label mIoU             |
| 5     | avg / max / Top-K pooling                                            | CRF pseudo-label mIoU             |

The paper's Tables 4 and 5 report the final segmentation mIoU (after stage 2); ours score the stage-1 pseudo-labels,
which is what a CPU can afford for 3 seeds x 8 cells; the tables say so.

Each cell lives in `OUTPUT/cells/<name>-seed<seed>-<hash>/`, the hash taken over the exact arguments it runs with:
a rerun with the same settings reuses every finished step (`*.done.json` markers), a killed run resumes (training
from its last complete checkpoint, pseudo-labelling from the masks already written), and changed settings make a
new cell instead of mixing results. The commands each table ran (`cpfcte-hf train`, `cpfcte-hf label`,
`cpfcte-hf train-deeplab` with the same arguments; run in-process here) are listed under it in `tables.md`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data import check_dataset
from ..stage1.arguments import TRAINER_OPTIONS, DataArguments, ModelArguments
from ..utils.arguments import parse_args_with_presets, parse_key_values, print_error, resolve_preset
from ..utils.io import atomic_write_text


logger = logging.getLogger(__name__)
TRAIN_ARGUMENTS = (ModelArguments, DataArguments, TRAINER_OPTIONS)  # `cpfcte-hf train`'s

PAPER_TABLES = {
    "1": {
        "title": "Table 1: pseudo-label quality (mIoU %)",
        "rows": [("CPF-CTE", "cpf-cte", "bpm", 67.1), ("CPF-CTE + CRF", "cpf-cte", "crf", 70.8)],
        "extra_rows": [
            ("ViT-PCM (BPM)", "vit-pcm", "bpm"),
            ("ViT-PCM + CRF", "vit-pcm", "crf"),
            ("CPF-CTE + L_ET (BPM)", "plus", "bpm"),
            ("CPF-CTE + L_ET + CRF", "plus", "crf"),
        ],
    },
    "2": {
        "title": "Table 2: PASCAL VOC val mIoU % (DeepLab-v2 on the CRF pseudo-labels; multi-scale + CRF)",
        "rows": [("CPF-CTE", "cpf-cte", "deeplab", 69.5)],
        "extra_rows": [],
    },
    "3": {
        "title": "Table 3: MS COCO 2014 val mIoU % (DeepLab-v2 on the CRF pseudo-labels), and the pseudo-labels",
        "rows": [("CPF-CTE", "cpf-cte", "deeplab", 45.4), ("CPF-CTE pseudo-labels", "cpf-cte", "crf", 41.3)],
        "extra_rows": [],
    },
    "4": {
        "title": "Table 4: ablation of class tokens and context fusion",
        "rows": [
            ("baseline", "baseline", "crf", 65.2),
            ("+ class tokens", "class-tokens", "crf", 67.1),
            ("+ context fusion", "context-fusion", "crf", 67.8),
            ("+ both (CPF-CTE)", "cpf-cte", "crf", 69.5),
        ],
        "extra_rows": [("ViT-PCM", "vit-pcm", "crf"), ("CPF-CTE + L_ET (plus)", "plus", "crf")],
    },
    "5": {
        "title": "Table 5: pooling of the patch probabilities",
        "rows": [("avg", "avg", "crf", 67.7), ("max", "max", "crf", 68.1), ("Top-K", "cpf-cte", "crf", 69.5)],
        "extra_rows": [],
    },
}
PAPER_METRIC = {
    "1": "pseudo-label mIoU on PASCAL VOC train",
    "2": "DeepLab-v2 mIoU on PASCAL VOC val",
    "3": "DeepLab-v2 mIoU on COCO val, and the pseudo-label mIoU",
    "4": "final mIoU after stage 2 on PASCAL VOC val (ours: the stage-1 pseudo-labels)",
    "5": "final mIoU after stage 2 on PASCAL VOC val (ours: the stage-1 pseudo-labels)",
}

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


def table_spec(table: str, top_k_sweep=()) -> dict:
    """A paper table, or "K": CPF-CTE at each K of the sweep (not in the paper)."""
    if table == "K":
        return {
            "title": "K of Top-K (not in the paper: the paper's K is not given)",
            "rows": [(f"K = {k:g}", f"top_k={k:g}", "crf", None) for k in top_k_sweep],
            "extra_rows": [],
        }
    return PAPER_TABLES[table]


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
    ),
    # Pseudo-labels of the 200 validation images (the training images are many more, and the tables only compare).
    "shapes": DatasetRecipe(
        "shapes-reproduce", "deeplab_shapes", "val", "train", "val", 192, {}, ("1", "2", "4", "5")
    ),
}


# A preset by name or path: the one lookup of the command line (kept under this name for 0.1.0's callers).
preset_path = resolve_preset


def _flag(key: str, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *[str(v) for v in value]]
    if isinstance(value, bool):
        value = str(value).lower()
    return [f"--{key}", str(value)]


def _command(command: str, argv: list[str]) -> str:
    """The `cpfcte-hf` command line a cell step is equivalent to (what tables.md lists)."""
    return " ".join(["cpfcte-hf", command, *[shlex.quote(a) for a in argv]])


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


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

    def _marker(self, step: str) -> Path:
        return self.directory / f"{step}.done.json"

    def _done(self, step: str):
        return _read_json(self._marker(step))

    def _finish(self, step: str, payload: dict) -> dict:
        atomic_write_text(self._marker(step), json.dumps(payload, indent=2, default=str) + "\n")
        return payload

    def train(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / "settings.json", json.dumps(self.settings, indent=2) + "\n")
        if self._done("train"):
            self.runner.reused.append(f"{self.directory.name}/train")
            return
        argv = list(self.train_argv)
        from ..utils.trainer_mixins import last_complete_checkpoint

        if last_complete_checkpoint(str(self.directory / "model")):
            argv += ["--resume_from_checkpoint", "last"]  # a killed run continues
        model_args, data_args, training_args = parse_args_with_presets(TRAIN_ARGUMENTS, argv)
        self.data_args = data_args
        started = time.perf_counter()
        from ..stage1.train import run_training

        run_training(model_args, data_args, training_args)
        self._finish("train", {"seconds": time.perf_counter() - started})
        self.runner.ran.append(f"{self.directory.name}/train")

    def _data_options(self) -> tuple[str, str | None, dict]:
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
        step = f"pseudo-{split}"
        out = self.directory / step
        dataset, data_root, options = self._data_options()
        argv = ["--model", str(self.directory / "model"), "--dataset", dataset, "--split", split]
        if data_root:
            argv += ["--data_root", data_root]
        for key, value in options.items():
            argv += ["--dataset_option", f"{key}={value}"]
        argv += ["--size", str(self.runner.recipe.inference_size), "--out", str(out)]
        command = _command("label", argv)
        if command not in self.commands:
            self.commands.append(command)
        done = self._done(step)
        if done:
            self.runner.reused.append(f"{self.directory.name}/{step}")
            return done
        from ..prediction.config import PseudoLabelConfig
        from ..prediction.pseudo_labels import run_pseudo_labeling

        config = PseudoLabelConfig(size=self.runner.recipe.inference_size, progress=False)
        started = time.perf_counter()
        summary = run_pseudo_labeling(
            model=str(self.directory / "model"),
            out_dir=str(out),
            dataset_name=dataset,
            data_root=data_root,
            split=split,
            dataset_kwargs=options,
            config=config,
        )
        scores = {"seconds": time.perf_counter() - started, "failed": summary.failed}
        if summary.report is not None:
            for name, result in summary.report["predictions"].items():
                iou = result["mean_iou"]
                scores[name.lower()] = None if iou is None else 100.0 * iou
        self.runner.ran.append(f"{self.directory.name}/{step}")
        return self._finish(step, scores)

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
        from ..stage2.train import parse_arguments, run_deeplab

        argv = self.deeplab_argv()
        out = self.directory / "deeplab"
        command = _command("train-deeplab", argv)
        if command not in self.commands:
            self.commands.append(command)
        done = self._done("deeplab")
        if done:
            self.runner.reused.append(f"{self.directory.name}/deeplab")
            return done
        from ..utils.trainer_mixins import last_complete_checkpoint

        if last_complete_checkpoint(str(out)):
            argv += ["--resume_from_checkpoint", "last"]  # a killed run continues
        started = time.perf_counter()
        result = run_deeplab(*parse_arguments(argv))
        report = result["report"] or {"predictions": {}}
        fused = report["predictions"].get("MS+CRF") or report["predictions"].get("MS") or {}
        iou = fused.get("mean_iou")
        self.runner.ran.append(f"{self.directory.name}/deeplab")
        return self._finish(
            "deeplab", {"seconds": time.perf_counter() - started, "deeplab": None if iou is None else 100 * iou}
        )


class Reproduction:
    """Runs the cells that `tables` need for `dataset` over `seeds` seeds, then writes tables.md and tables.json."""

    def __init__(
        self,
        dataset: str,
        output_dir: str | os.PathLike,
        tables=("1", "2", "4", "5"),
        seeds: int = 1,
        data_root: str | None = None,
        preset: str | None = None,
        deeplab_preset: str | None = None,
        overrides: dict | None = None,
        deeplab_overrides: dict | None = None,
        inference_size: int | None = None,
        top_k_sweep=None,
    ):
        if dataset not in RECIPES:
            raise ValueError(f"--dataset must be one of {sorted(RECIPES)}, got {dataset!r}.")
        recipe = RECIPES[dataset]
        tables = [str(t) for t in tables]
        self.top_k_sweep = [float(k) for k in (top_k_sweep or [])]
        if self.top_k_sweep:
            tables = list(dict.fromkeys([*tables, "K"]))
        unknown = [t for t in tables if t not in PAPER_TABLES and t != "K"]
        if unknown:
            raise ValueError(f"Unknown table(s) {unknown}: the paper's tables are 1 to 5.")
        wrong = [t for t in tables if t not in recipe.tables and t != "K"]
        if wrong:
            raise ValueError(f"Table(s) {wrong} are not on {dataset} (its tables: {', '.join(recipe.tables)}).")
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}.")
        if inference_size:
            recipe = DatasetRecipe(**{**recipe.__dict__, "inference_size": int(inference_size)})
        self.dataset, self.recipe, self.tables, self.seeds = dataset, recipe, tables, seeds
        self.output_dir = Path(output_dir)
        self.data_root = data_root
        self.preset = preset or recipe.preset
        self.deeplab_preset = deeplab_preset
        self.overrides = dict(overrides or {})
        self.deeplab_overrides = dict(deeplab_overrides or {})
        self.ran: list[str] = []
        self.reused: list[str] = []

    def base_seed(self) -> int:
        _, _, training_args = parse_args_with_presets(
            TRAIN_ARGUMENTS,
            ["--config", str(preset_path(self.preset)), "--output_dir", "unused", "--bf16", "false"],
        )
        return int(self.overrides.get("seed", training_args.seed))

    def variants(self) -> list[str]:
        needed = []
        for table in self.tables:
            spec = table_spec(table, self.top_k_sweep)
            for _, variant, *_ in spec["rows"] + spec["extra_rows"]:
                if variant not in needed:
                    needed.append(variant)
        return needed

    def check(self, variants=None) -> None:
        """
        Refuses, before anything is written, a reproduction that cannot start, reporting the first problem in one
        line: the stage-1 settings and data of each variant (default: those the tables need; `check_training_inputs`),
        the split the tables score, and the stage-2 settings (`check_deeplab_inputs`) where a table needs stage 2.
        """
        from ..stage2.train import check_deeplab_inputs
        from ..stage2.train import parse_arguments as deeplab_arguments

        seed = self.base_seed()
        cells = [Cell(self, variant, seed) for variant in (variants or self.variants())]
        for cell in cells:
            model_args, data_args, training_args = parse_args_with_presets(TRAIN_ARGUMENTS, cell.train_argv)
            from ..stage1.train import check_training_inputs

            check_training_inputs(model_args, data_args, training_args, turn_off_bf16="--override bf16=false")
            dataset, data_root, options = cell._data_options()
            check_dataset(dataset, data_root, self.recipe.score_split, **options)
        if variants is None and {"2", "3"} & set(self.tables):
            argv = Cell(self, "cpf-cte", seed).deeplab_argv()
            data_args, model_args, _, _, training_args = deeplab_arguments(argv)
            pseudo = str(data_args.pseudo_labels)  # made by the cell's pseudo-labelling
            check_deeplab_inputs(
                data_args,
                model_args,
                training_args,
                turn_off_bf16="--deeplab_override bf16=false",
                made_earlier={pseudo},
            )

    def run(self) -> dict:
        self.check()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        base = self.base_seed()
        seeds = [base + i for i in range(self.seeds)]
        results: dict[str, list[dict]] = {}
        commands: dict[str, list[str]] = {}
        for variant in self.variants():
            for seed in seeds:
                cell = Cell(self, variant, seed)
                cell.train()
                scores = dict(cell.pseudo_labels(self.recipe.score_split))
                if variant == "cpf-cte" and {"2", "3"} & set(self.tables):
                    if self.recipe.deeplab_split != self.recipe.score_split:
                        cell.pseudo_labels(self.recipe.deeplab_split)
                    scores.update(cell.deeplab())
                results.setdefault(variant, []).append({"seed": seed, "cell": cell.directory.name, **scores})
                commands.setdefault(variant, []).extend(cell.commands)
        report = self.tabulate(results, commands, seeds)
        atomic_write_text(self.output_dir / "tables.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(self.output_dir / "tables.md", format_tables(report))
        return report

    def tabulate(self, results: dict, commands: dict, seeds: list[int]) -> dict:
        tables = {}
        for table in self.tables:
            spec = table_spec(table, self.top_k_sweep)
            rows = []
            used = []
            for row in [*spec["rows"], *[(*extra, None) for extra in spec["extra_rows"]]]:
                name, variant, metric, paper = row
                values = [r[metric] for r in results.get(variant, []) if r.get(metric) is not None]
                mean = sum(values) / len(values) if values else None
                rows.append(
                    {
                        "row": name,
                        "variant": variant,
                        "metric": metric,
                        "paper": paper,
                        "ours_mean": mean,
                        "ours_std": _std(values),
                        "ours_per_seed": values,
                    }
                )
                if variant not in used:
                    used.append(variant)
            tables[table] = {
                "title": spec["title"],
                "paper_metric": PAPER_METRIC.get(table, "no"),
                "rows": rows,
                "commands": [c for variant in used for c in commands.get(variant, [])],
            }
        return {
            "dataset": self.dataset,
            "seeds": seeds,
            "score_split": self.recipe.score_split,
            "output_dir": str(self.output_dir),
            "tables": tables,
            "steps_run": list(self.ran),
            "steps_reused": list(self.reused),
        }


METRIC_NAMES = {
    "bpm": "pseudo-label mIoU before the CRF",
    "crf": "pseudo-label mIoU with the CRF",
    "deeplab": "DeepLab-v2 val mIoU (multi-scale + CRF)",
}


def _cell(mean, std, count) -> str:
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.1f} (1 seed)"
    return f"{mean:.1f} ± {std:.1f} ({count} seeds)"


def format_tables(report: dict) -> str:
    """tables.md: per table, our numbers beside the paper's, what each number measures, and the commands run."""
    lines = [
        f"# Reproduction on {report['dataset']}",
        "",
        f"Seeds: {', '.join(str(s) for s in report['seeds'])}. Pseudo-labels scored on the "
        f"`{report['score_split']}` split. Written by `cpfcte-hf reproduce`.",
        "",
    ]
    for table in report["tables"].values():
        lines += [f"## {table['title']}", "", "| row | paper | ours | our metric |", "|---|---|---|---|"]
        for row in table["rows"]:
            paper = "—" if row["paper"] is None else f"{row['paper']:.1f}"
            ours = _cell(row["ours_mean"], row["ours_std"], len(row["ours_per_seed"]))
            lines.append(f"| {row['row']} | {paper} | {ours} | {METRIC_NAMES[row['metric']]} |")
        if table["paper_metric"] != "no":
            lines += ["", f"The paper's numbers: {table['paper_metric']}.", ""]
        else:
            lines += [""]
        lines += ["Commands:", "", "```", *table["commands"], "```", ""]
    return "\n".join(lines)


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_cells(reproduction: Reproduction, variants, epochs: int = 1) -> dict:
    """
    Wall and CPU seconds of one cell per variant, trained for `epochs` epochs (a separate cell: the override is part
    of its settings) and pseudo-labelled on the score split; for projecting a whole table before running it.
    """
    reproduction.overrides = {**reproduction.overrides, "num_train_epochs": epochs}
    reproduction.check(variants)
    seed = reproduction.base_seed()
    timings = {}
    for variant in variants:
        cell = Cell(reproduction, variant, seed)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        cell.train()
        train = (time.perf_counter() - wall, _cpu_seconds() - cpu)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        cell.pseudo_labels(reproduction.recipe.score_split)
        pseudo = (time.perf_counter() - wall, _cpu_seconds() - cpu)
        timings[variant] = {
            "epochs": epochs,
            "train_wall_s": round(train[0], 1),
            "train_cpu_s": round(train[1], 1),
            "pseudo_labels_wall_s": round(pseudo[0], 1),
            "pseudo_labels_cpu_s": round(pseudo[1], 1),
        }
    return timings


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="cpfcte-hf reproduce",
        description="Run what the paper's tables need and write tables.md / tables.json (cpfcte_hf.workflows.reproduce).",
    )
    parser.add_argument("--dataset", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data_root", "--data-root", default=None, help="dataset root (shapes: a folder to write)")
    parser.add_argument("--tables", nargs="+", default=None, help="which of 1 2 3 4 5 (default: all on the dataset)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per cell (the preset's seed, +1, ...)")
    parser.add_argument("--output_dir", "--output-dir", default=None, help="default outputs/reproduce/<dataset>")
    parser.add_argument("--preset", default=None, help="stage-1 preset name or YAML path (default: the dataset's)")
    parser.add_argument("--deeplab_preset", default=None, help="stage-2 preset name or YAML path")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="stage-1 option for every cell"
    )
    parser.add_argument("--deeplab_override", action="append", default=[], metavar="KEY=VALUE", help="stage-2 option")
    parser.add_argument("--inference_size", type=int, default=None, help="pseudo-label resolution")
    parser.add_argument(
        "--time_cells",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help=f"only time one cell of each variant ({', '.join(VARIANTS)}) for --time_epochs epochs, print JSON",
    )
    parser.add_argument("--time_epochs", type=int, default=1)
    parser.add_argument(
        "--top_k_sweep",
        nargs="+",
        type=float,
        default=None,
        metavar="K",
        help="also a table of CPF-CTE at each K (a count, or a fraction of the patches in (0, 1))",
    )
    return parser


def main(argv=None) -> int:

    args = build_parser().parse_args(argv)
    try:
        reproduction = Reproduction(
            args.dataset,
            args.output_dir or os.path.join("outputs", "reproduce", args.dataset),
            tables=args.tables or RECIPES[args.dataset].tables,
            seeds=args.seeds,
            data_root=args.data_root,
            preset=args.preset,
            deeplab_preset=args.deeplab_preset,
            overrides=parse_key_values(args.override),
            deeplab_overrides=parse_key_values(args.deeplab_override),
            inference_size=args.inference_size,
            top_k_sweep=args.top_k_sweep,
        )
        if args.time_cells:
            for variant in args.time_cells:
                variant_overrides(variant)  # a clear error for an unknown one
            print(json.dumps(time_cells(reproduction, args.time_cells, args.time_epochs), indent=2))
            return 0
        report = reproduction.run()
    except (OSError, ValueError) as error:
        print_error(error)
        return 2
    print(format_tables(report))
    print(
        f"{len(report['steps_run'])} step(s) run, {len(report['steps_reused'])} reused; "
        f"tables in {reproduction.output_dir}"
    )
    return 0


__all__ = [
    "PAPER_TABLES",
    "RECIPES",
    "VARIANTS",
    "Cell",
    "Reproduction",
    "format_tables",
    "main",
    "preset_path",
    "time_cells",
]
