# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The `cpfcte-hf` command (also `python -m cpfcte_hf`): one small module per subcommand.

    cpfcte-hf train --config shapes                      # stage 1 (accelerate launch -m cpfcte_hf train ...)
    cpfcte-hf label --model outputs/shapes --dataset shapes --split train --output_dir pseudo/shapes
    cpfcte-hf run --config voc --data_root data/VOCdevkit/VOC2012
    cpfcte-hf demo

Each module has `main(argv) -> int` (0: done, 2: bad arguments or inputs, 3: the run itself failed) and a one-line
`SUMMARY`; modules are imported only when their command runs, so `cpfcte-hf --help` is quick. A command stopped by
Ctrl-C ends with one line and exit status 130 (143 for a SIGTERM it turned into an interrupt), not a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence


# command name -> (module, one-line summary)
COMMANDS = {
    "train": ("cpfcte_hf.cli.commands.train", "Stage 1: train CPF-CTE from image-level labels."),
    "label": ("cpfcte_hf.cli.commands.label", "Pseudo-label masks of a split (BPM + dense CRF) and their report."),
    "evaluate": (
        "cpfcte_hf.cli.commands.evaluate",
        "mIoU report of folders of mask PNGs against a split's ground truth.",
    ),
    "train-deeplab": (
        "cpfcte_hf.cli.commands.train_deeplab",
        "Stage 2: train DeepLab-v2 on pseudo-labels, evaluate it.",
    ),
    "export": (
        "cpfcte_hf.cli.commands.export",
        "Masks of a labelled output as a `datasets` dataset and/or COCO JSON.",
    ),
    "train-segmenter": (
        "cpfcte_hf.cli.commands.train_segmenter",
        "Stage 2 with any transformers segmentation model (SegFormer, UperNet, ...; default DeepLab-v2).",
    ),
    "push": ("cpfcte_hf.cli.commands.push", "Share a checkpoint on the Hub (or --dry_run DIR: write the folder)."),
    "run": (
        "cpfcte_hf.workflows.run",
        "The whole method: stage 1 -> pseudo-labels -> stage 2 -> evaluation -> Hub folder.",
    ),
    "make-voc-rehearsal": (
        "cpfcte_hf.cli.commands.make_voc_rehearsal",
        "A VOC 2012 + SBD-sized tree from the procedural shapes (rehearsals at scale).",
    ),
    "demo": (
        "cpfcte_hf.cli.commands.demo",
        "`run --config demo` on the built-in shapes data, on a CPU, with a report.",
    ),
    "app": ("cpfcte_hf.cli.commands.app", "A page in the browser: label photos, review a labelling run (pip: [app])."),
    "bench": ("cpfcte_hf.benchmarks", "Benchmarks (train, data, pseudo_label, deeplab, crf_memory, gpu)."),
    "reproduce": (
        "cpfcte_hf.workflows.reproduce",
        "The paper's tables: the runs each needs, tables.md and tables.json.",
    ),
}


# What an interrupted command leaves to continue from (said on its one line).
RESUME_HINTS = {
    name: "its complete checkpoints stay in its output_dir; `--resume_from_checkpoint last` continues from the newest"
    for name in ("train", "train-deeplab", "train-segmenter")
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: cpfcte-hf <command> [options]   (cpfcte-hf <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Every command takes --config PRESET (packaged name or YAML path) and --print_config."]
    return "\n".join(lines)


def run_command(name: str, argv: Sequence[str]) -> int:
    """Runs subcommand `name` (dashes or underscores) with `argv`; returns its exit status."""
    name = name.replace("_", "-")
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(list(argv))
    except KeyboardInterrupt as error:  # Ctrl-C in a command that does not catch it itself (the trainings)
        from ..utils.interrupts import as_interrupted

        stopped = as_interrupted(error, RESUME_HINTS.get(name, ""))
        print(f"cpfcte-hf {name}: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    try:
        return run_command(argv[0], argv[1:])
    except SystemExit as exit_:  # argparse's --help and errors: keep their status
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


__all__ = ["COMMANDS", "main", "run_command", "usage"]
