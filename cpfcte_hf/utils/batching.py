# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The global batch is the recipe: per-device batch and gradient accumulation derived from the launch.

A recipe states the batch of one optimiser step over all processes (`global_train_batch_size`: the CPF-CTE paper's 16
for stage 1, kazuto1011's 10 for DeepLab-v2), and the most images one device takes at once
(`max_per_device_train_batch_size`: 8 per GPU in the paper's two-GPU run, kazuto1011's 5). For N processes the share
of each is `global / N`; the per-device batch is the largest divisor of that share within the cap, and gradient
accumulation makes up the rest, so that `per_device x accumulation x N = global` on 1, 2 or 8 GPUs alike:

    global 16, cap 8:  1 process: 8 x 2    2 processes: 8 x 1    4: 4 x 1    8: 2 x 1
    global 10, cap 5:  1 process: 5 x 2    2 processes: 5 x 1    5: 2 x 1 ... 3 processes: refused

A launch whose process count does not divide the global batch is refused, in one line naming the process counts that
would work. An explicit `--per_device_train_batch_size` (with `--gradient_accumulation_steps`, default 1) is taken as
given: the global batch is then what it makes, and a departure from the recipe where it differs (`describe` prints
it as such, and the trainings say it at start-up).

`TrainBatchMixin` puts this on a `TrainingArguments` subclass (both stages use it); `plan_train_batch` is the one
function that derives the sizes, and `launch_num_processes` the one place that counts the processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def launch_num_processes() -> int:
    """
    Processes of the current launch, over all machines: accelerate's `PartialState` once it is set up (a step of
    `cpfcte-hf run` after the first), else the launcher's `WORLD_SIZE` (`accelerate launch`, `torchrun`), else 1.
    Reading the environment keeps `--print_config` cheap: it sets up no process group.
    """
    from accelerate import PartialState

    if PartialState._shared_state and PartialState._shared_state.get("num_processes"):
        return int(PartialState().num_processes)
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


@dataclass(frozen=True)
class TrainBatchPlan:
    """How one optimiser step of `global_batch` images is split: `per_device x accumulation x num_processes`."""

    per_device: int
    accumulation: int
    num_processes: int
    recipe: int | None  # the recipe's global batch (None: the recipe states none)
    explicit: bool  # the per-device batch was given, not derived

    @property
    def global_batch(self) -> int:
        return self.per_device * self.accumulation * self.num_processes

    @property
    def departure(self) -> str | None:
        """One sentence when the launch trains at another global batch than the recipe's, else None."""
        if self.recipe is None or self.global_batch == self.recipe:
            return None
        return (
            f"global batch {self.global_batch} instead of the recipe's {self.recipe} (--per_device_train_batch_size "
            f"{self.per_device} given explicitly)"
        )

    def summary(self) -> dict:
        """The plan as `--print_config` and the run records show it."""
        return {
            "global_train_batch_size": self.global_batch,
            "recipe_global_train_batch_size": self.recipe,
            "num_processes": self.num_processes,
            "per_device_train_batch_size": self.per_device,
            "gradient_accumulation_steps": self.accumulation,
            "per_device_given": self.explicit,
            "departure": self.departure,
        }

    def line(self) -> str:
        """One log line: `batch 16 = 8 per device x 2 accumulation x 1 process(es)`, and the departure if any."""
        text = (
            f"Batch: {self.global_batch} images per optimiser step = {self.per_device} per device x "
            f"{self.accumulation} accumulation x {self.num_processes} process(es)"
        )
        return text + (f"; a departure from the recipe: {self.departure}" if self.departure else "")


def _divisors(number: int) -> list[int]:
    return [d for d in range(1, number + 1) if number % d == 0]


def _check_batch_values(global_batch, num_processes, max_per_device, per_device, accumulation) -> None:
    """Every size given is at least 1, and so is the launch."""
    for name, value in (
        ("global_train_batch_size", global_batch),
        ("max_per_device_train_batch_size", max_per_device),
        ("per_device_train_batch_size", per_device),
        ("gradient_accumulation_steps", accumulation),
    ):
        if value is not None and int(value) < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    if num_processes < 1:
        raise ValueError(f"The launch has {num_processes} processes.")


def _per_device_size(global_batch: int, num_processes: int, max_per_device: int | None, multiple: int) -> int:
    """The largest divisor of each process's share of `global_batch` within the cap that is a multiple of
    `multiple`; `ValueError` naming the process counts that would work when there is none."""
    share = global_batch // num_processes
    cap = share if max_per_device is None else min(share, max_per_device)
    sizes = [d for d in _divisors(share) if d <= cap and d % multiple == 0]
    if not sizes:
        counts = ", ".join(str(n) for n in _divisors(global_batch) if (global_batch // n) % multiple == 0)
        raise ValueError(
            f"--global_train_batch_size {global_batch} over {num_processes} processes leaves {share} image(s) per "
            f"process, and the per-device batch must be a multiple of {multiple} (the L_ET mosaics tile 4 images): "
            f"launch {counts or 'fewer'} process(es)."
        )
    return max(sizes)


def plan_train_batch(
    global_batch: int | None,
    num_processes: int,
    *,
    max_per_device: int | None = None,
    per_device: int | None = None,
    accumulation: int | None = None,
    default_per_device: int = 8,
    multiple: int = 1,
) -> TrainBatchPlan:
    """
    The per-device batch and gradient accumulation for `num_processes` (see the module docstring). `per_device` /
    `accumulation` are explicit values (None: derive); a derived per-device batch is a multiple of `multiple` (4 with
    ViT-PCM's L_ET, whose mosaics tile 4 images of a batch). Raises `ValueError` (one line saying what would work) when the
    recipe's global batch cannot be realised exactly.
    """
    _check_batch_values(global_batch, num_processes, max_per_device, per_device, accumulation)
    if per_device is not None or global_batch is None:
        # Taken as given (the recipe's global batch is then only compared with, in `departure`).
        return TrainBatchPlan(
            per_device=int(per_device if per_device is not None else default_per_device),
            accumulation=int(accumulation or 1),
            num_processes=num_processes,
            recipe=global_batch,
            explicit=per_device is not None,
        )
    if global_batch % num_processes:
        counts = ", ".join(str(d) for d in _divisors(global_batch))
        raise ValueError(
            f"--global_train_batch_size {global_batch} (the recipe's batch) cannot be split evenly over "
            f"{num_processes} processes: launch {counts} process(es), or pass --per_device_train_batch_size "
            "(a departure from the recipe)."
        )
    share = global_batch // num_processes
    if accumulation is not None:
        if share % accumulation:
            options = ", ".join(str(d) for d in _divisors(share))
            raise ValueError(
                f"--gradient_accumulation_steps {accumulation} does not divide the {share} images each of the "
                f"{num_processes} process(es) takes of the global batch {global_batch}: use one of {options}."
            )
        return TrainBatchPlan(share // accumulation, accumulation, num_processes, global_batch, explicit=False)
    size = _per_device_size(global_batch, num_processes, max_per_device, multiple)
    return TrainBatchPlan(size, share // size, num_processes, global_batch, explicit=False)


@dataclass
class TrainBatchMixin:
    """
    `TrainingArguments` whose `per_device_train_batch_size` and `gradient_accumulation_steps` follow
    `global_train_batch_size` and the launch (`plan_train_batch`), resolved in `__post_init__` before transformers
    checks them. Mixed in before `TrainingArguments`; a subclass sets the recipe's `global_train_batch_size` and
    `max_per_device_train_batch_size` defaults. `train_batch_plan` keeps the plan (`describe` prints it);
    `trains_model()` False (an evaluation-only run) skips the check that the launch can realise the recipe's batch.
    """

    global_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Images per optimiser step over all processes: the recipe. The per-device batch and gradient "
            "accumulation are derived from the launch's process count (README: batch sizes)."
        },
    )
    max_per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Most images one device takes at once; gradient accumulation makes up the rest."},
    )
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Derived from --global_train_batch_size and the launch; giving it overrides the recipe (printed "
            "as a departure when the global batch then differs)."
        },
    )
    gradient_accumulation_steps: int | None = field(
        default=None, metadata={"help": "Derived from --global_train_batch_size and the launch unless given."}
    )

    default_per_device_train_batch_size = 8  # without a recipe and without a value (a class attribute, no option)

    def trains_model(self) -> bool:
        return True

    def per_device_multiple(self) -> int:
        """What a derived per-device batch must be a multiple of (1: anything)."""
        return 1

    def __post_init__(self):
        global_batch = self.global_train_batch_size
        per_device, accumulation = self.per_device_train_batch_size, self.gradient_accumulation_steps
        processes = launch_num_processes()
        if self.trains_model() or per_device is not None:
            plan = plan_train_batch(
                global_batch,
                processes,
                max_per_device=self.max_per_device_train_batch_size,
                per_device=per_device,
                accumulation=accumulation,
                default_per_device=self.default_per_device_train_batch_size,
                multiple=self.per_device_multiple(),
            )
        else:  # nothing is trained: any launch will do
            share = max(1, (global_batch or self.default_per_device_train_batch_size) // processes)
            plan = TrainBatchPlan(share, 1, processes, global_batch, explicit=False)
        self.per_device_train_batch_size = plan.per_device
        self.gradient_accumulation_steps = plan.accumulation
        self.train_batch_plan = plan
        super().__post_init__()


__all__ = ["TrainBatchMixin", "TrainBatchPlan", "launch_num_processes", "plan_train_batch"]
