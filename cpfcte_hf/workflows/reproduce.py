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

The paper's numbers are data: `cpfcte_hf/workflows/paper_tables.yaml` (`tables.py` reads it and writes the tables).
Each cell lives in `OUTPUT/cells/<name>-seed<seed>-<hash>/`, the hash taken over its stage-1 arguments and preset, so
that changed stage-1 settings make a new cell instead of mixing results. Its steps (`cpfcte-hf train`, `cpfcte-hf
label`, `cpfcte-hf train-deeplab`, run in this process; listed under each table in `tables.md`) go through the step
engine of `cpfcte-hf run` (`cpfcte_hf.workflows.steps`), each with its record `CELL/<step>.done.json` (its resolved
settings and their fingerprint): a rerun with the same settings reuses every finished step, a killed run resumes
(training from its last complete checkpoint, pseudo-labelling from the masks already written), and a step made with
other settings (e.g. other `--deeplab_override`s) is refused, naming them, unless `--overwrite` redoes it. A cell
written by an older cpfcte-hf (markers without settings) is refused the same way, never reused unchecked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..data import check_dataset
from ..utils.arguments import parse_args_with_presets, parse_key_values, print_error
from ..utils.interrupts import as_interrupted, stop_on_signals
from ..utils.io import atomic_write_text
from ..utils.openmp import set_openmp_wait
from .cells import (
    RECIPES,
    TRAIN_ARGUMENTS,
    VARIANTS,
    Cell,
    DatasetRecipe,
    StepFailed,
    preset_path,
    variant_overrides,
)
from .steps import check_step
from .tables import METRIC_NAMES, PAPER_METRIC, PAPER_TABLES, format_tables, table_spec, tabulate


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
        overwrite: bool = False,
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
        self.overwrite = overwrite
        self.ran: list[str] = []
        self.reused: list[str] = []

    def base_seed(self, light: bool = False) -> int | None:
        """The first training seed: the stage-1 preset's (or `--override seed=`); with `light`, read without
        transformers (None where the stored table of Trainer's options does not serve this transformers)."""
        parsed = parse_args_with_presets(
            TRAIN_ARGUMENTS,
            ["--config", str(preset_path(self.preset)), "--output_dir", "unused", "--bf16", "false"],
            light=light,
        )
        return None if parsed is None else int(self.overrides.get("seed", parsed[2].seed))

    def variants(self) -> list[str]:
        needed = []
        for table in self.tables:
            spec = table_spec(table, self.top_k_sweep)
            for _, variant, *_ in spec["rows"] + spec["extra_rows"]:
                if variant not in needed:
                    needed.append(variant)
        return needed

    def check(self, variants=None, light: bool = False) -> None:
        """
        Refuses, before anything is written, a reproduction that cannot start, reporting the first problem in one
        line: the stage-1 settings and data of each variant (default: those the tables need; `check_training_inputs`),
        the split the tables score, and the stage-2 settings (`check_deeplab_inputs`) where a table needs stage 2.
        With `light`, the checks that need no library (`steps.check_step`), on the options as the front door builds
        them: `main` makes them before transformers is imported.
        """
        from ..stage2.arguments import parse_arguments as deeplab_arguments

        seed = self.base_seed(light)
        if seed is None:
            return  # no stored table of Trainer's options for this transformers: the full check does it all
        cells = [Cell(self, variant, seed) for variant in (variants or self.variants())]
        for cell in cells:
            instances = parse_args_with_presets(TRAIN_ARGUMENTS, cell.train_argv, light=light)
            check_step("train", instances, light=light, turn_off_bf16="--override bf16=false")
            dataset, data_root, options = cell._data_options(instances[1])  # (model, data, training) options
            check_dataset(dataset, data_root, self.recipe.score_split, **options)
        if variants is None and {"2", "3"} & set(self.tables):
            argv = Cell(self, "cpf-cte", seed).deeplab_argv()
            instances = deeplab_arguments(argv, light=light)
            pseudo = {str(instances[0].pseudo_labels)}  # made by the cell's pseudo-labelling
            check_step(
                "train-deeplab",
                instances,
                light=light,
                turn_off_bf16="--deeplab_override bf16=false",
                made_earlier=pseudo,
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
        return {
            "dataset": self.dataset,
            "seeds": seeds,
            "score_split": self.recipe.score_split,
            "output_dir": str(self.output_dir),
            "tables": tabulate(self.tables, self.top_k_sweep, results, commands),
            "steps_run": list(self.ran),
            "steps_reused": list(self.reused),
        }


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
        "--overwrite", action="store_true", help="redo cell steps recorded with other (or unrecorded) settings"
    )
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
    set_openmp_wait(training=True)  # the cells' trainings run in this process (as in `run`), before torch loads
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
            overwrite=args.overwrite,
        )
        for variant in args.time_cells or ():
            variant_overrides(variant)  # a clear error for an unknown one
        reproduction.check(args.time_cells, light=True)  # the data and inputs, before transformers is imported
        if args.time_cells:
            print(json.dumps(time_cells(reproduction, args.time_cells, args.time_epochs), indent=2))
            return 0
        with stop_on_signals():  # SIGTERM stops a cell's step as Ctrl-C does (one line, exit status 143)
            report = reproduction.run()
    except (OSError, ValueError) as error:
        print_error(error)
        return 2
    except StepFailed as error:
        print_error(error)
        return 3
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM in a cell's step (one line; its command said which)
        stopped = as_interrupted(error)
        print_error(stopped)
        return stopped.exit_code
    print(format_tables(report))
    print(
        f"{len(report['steps_run'])} step(s) run, {len(report['steps_reused'])} reused; "
        f"tables in {reproduction.output_dir}"
    )
    return 0


__all__ = [
    "METRIC_NAMES",
    "PAPER_METRIC",
    "PAPER_TABLES",
    "DatasetRecipe",
    "table_spec",
    "variant_overrides",
    "RECIPES",
    "VARIANTS",
    "Cell",
    "Reproduction",
    "format_tables",
    "main",
    "preset_path",
    "time_cells",
]
