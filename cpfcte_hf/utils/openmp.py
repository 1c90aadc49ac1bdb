# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""How the idle OpenMP threads of torch's CPU ops wait, chosen per process before torch is loaded.

OpenMP reads its wait settings once, when torch loads it, so they are environment variables set before torch is
imported (no effect in a process that imported torch first):

- **sleep at once** (`OMP_WAIT_POLICY=PASSIVE`), set when `cpfcte_hf` is imported: where the model and the CRF
  worker processes take turns on the cores (`label`, `evaluate`, stage 2's predictions) and where runs share a
  machine, a thread that spins while it waits takes the core the CRF needs. GNU OpenMP's own spin made two `label`
  runs side by side 5x slower; a short spin made one `label` of the demo's 2,000 images 1.5x slower.
- **spin briefly, then sleep** (`GOMP_SPINCOUNT=10000`, GNU OpenMP's), set by the commands that train a model
  (`train`, `train-deeplab`, `train-segmenter`, and the workflows `run`, `demo` and `reproduce`, whose steps run in
  their own process) before they import torch: a training step is a few hundred small ops one after the other, and
  a thread that sleeps after each pays a wake-up before the next (the demo's stage-2 step took 1.4x as long). A
  workflow's `label` step pays for the spin (the demo's took 83 s instead of 53 s); its trainings gain more.

A value the user put in the environment (`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`) is left alone; `WAIT_MARKER` tells
the package's own values, which a child process may change for its own kind of work, from the user's (README,
Performance, "OpenMP threads").
"""

from __future__ import annotations

import os


TRAINING_SPIN_COUNT = "10000"
WAIT_MARKER = "CPFCTE_HF_OPENMP_WAIT"  # "prediction" / "training": the two variables below were set by the package
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def set_openmp_wait(training: bool) -> None:
    """Idle OpenMP threads of this process (and of the processes it starts) spin briefly before they sleep
    (`training`) or sleep at once; nothing changes where the user set `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`."""
    if WAIT_MARKER not in os.environ and any(name in os.environ for name in WAIT_VARIABLES):
        return
    for name in WAIT_VARIABLES:
        os.environ.pop(name, None)
    if training:
        os.environ["GOMP_SPINCOUNT"] = TRAINING_SPIN_COUNT
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ[WAIT_MARKER] = "training" if training else "prediction"


__all__ = ["TRAINING_SPIN_COUNT", "WAIT_MARKER", "WAIT_VARIABLES", "set_openmp_wait"]
