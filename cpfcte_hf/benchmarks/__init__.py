# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Benchmarks: `cpfcte-hf bench <name> [options]` (`cpfcte-hf bench <name> --help` for each one's options).

    cpfcte-hf bench train --batch_size 2 --output outputs/bench/train.json     # stage-1 training step vs ViT
    cpfcte-hf bench data --workers 0 2                                         # data loading
    cpfcte-hf bench pseudo_label                                               # model step and CRF (pool vs serial)
    cpfcte-hf bench deeplab --batch_size 2 --size 321                          # DeepLab-v2 step, FLOPs
    cpfcte-hf bench crf_memory --megapixels 0.5 4 12 24                         # CRF memory for large photos
    cpfcte-hf bench gpu --output outputs/bench/gpu.json                        # everything on one CUDA GPU
    cpfcte-hf bench report --output outputs/bench/report.json                  # report.html of 10,000 images
    cpfcte-hf bench resume --images 10000                                      # resume by content: its cost
    cpfcte-hf bench concurrency                                                # two `label` runs side by side
    cpfcte-hf bench rehearsal --sizes 1000 --kill_check                        # `run --config voc` at VOC scale

Each benchmark is a module with `main(argv) -> int`; register a new one in `BENCHMARKS`.
"""

from __future__ import annotations

import importlib
import sys


BENCHMARKS = {
    "train": ("cpfcte_hf.benchmarks.train", "CPF-CTE training step against the bare ViT backbone."),
    "data": ("cpfcte_hf.benchmarks.data", "Data loading: decode + augmentation + collator, images/s."),
    "pseudo_label": ("cpfcte_hf.benchmarks.pseudo_label", "Pseudo-labelling: model step, CRF serial vs pool."),
    "deeplab": ("cpfcte_hf.benchmarks.deeplab", "DeepLab-v2 ResNet-101: parameters, FLOPs, step time."),
    "crf_memory": (
        "cpfcte_hf.benchmarks.crf_memory",
        "CRF time and peak memory for large photos, by --crf_max_side.",
    ),
    "report": (
        "cpfcte_hf.benchmarks.report",
        "report.html of a synthetic 10,000-image run: build time, load time in headless Chromium.",
    ),
    "app": ("cpfcte_hf.benchmarks.app", "The app's label mode in headless Chromium: seconds per photo."),
    "gpu": (
        "cpfcte_hf.benchmarks.gpu",
        "One-call GPU benchmark (make bench-gpu); --smoke runs it on the CPU in seconds.",
    ),
    "resume": ("cpfcte_hf.benchmarks.resume", "Resume by content: the start of a job over N done images."),
    "concurrency": (
        "cpfcte_hf.benchmarks.concurrency",
        "`label` runs side by side against one after the other (threads x CRF workers x processes).",
    ),
    "rehearsal": (
        "cpfcte_hf.benchmarks.rehearsal",
        "`run --config voc` on a VOC-sized generated tree, per step: time, RSS, disk; kill -9 and resume.",
    ),
}


def usage() -> str:
    lines = ["usage: cpfcte-hf bench <name> [options]", "", "benchmarks:"]
    lines += [f"  {name:<14}{summary}" for name, (_, summary) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in BENCHMARKS:
        print(f"error: unknown benchmark {argv[0]!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(BENCHMARKS[name][0]).main(argv[1:]) or 0
