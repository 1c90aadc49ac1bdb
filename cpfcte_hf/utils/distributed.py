# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The processes of a run: accelerate's `PartialState` (the launch's under a launcher with several processes, else
this process alone), the share of a split each process takes, the process group shared by the steps of
`cpfcte-hf run`, its teardown, and whether torch sees an accelerator.

torch is imported only when a function needs it (the command line's front door imports this module).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..models.cpfcte.crf import default_num_workers
from .openmp import WAIT_MARKER


def _torch_distributed_initialized() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def cpu_processes_use_gloo() -> None:
    """
    Under a launcher with several processes (`WORLD_SIZE` > 1) on a machine without a GPU, makes `TrainingArguments`
    set up CPU data parallelism (gloo), as `--use_cpu true` or `accelerate launch --cpu` would. Without it, a
    recipe that does not say `use_cpu` would run one independent, unsharded training per process, each saving to the
    same directory.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator) to put each process on; False: the processes use the CPU."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


# What accelerate reads to take a process for one of a launch: `LOCAL_RANK` (torchrun, even with one process) and
# MPI's process counts. A process that is alone hides them while its state is made, so that no process group is set up.
_LAUNCH_VARIABLES = ("LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@contextmanager
def _without_environment_variables(names: tuple[str, ...]):
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def distributed_state():
    """
    accelerate's `PartialState` of this process, always one. Under a launcher with several processes (`WORLD_SIZE`
    > 1): the launch's, with its process group. Otherwise this process alone: `num_processes` 1, `process_index` 0,
    `is_main_process`; `wait_for_everyone`, `gather_object` and `broadcast_object_list` return at once. Made alone,
    it sets up no process group and leaves torch's devices and threads as they are; a state this process already has
    (a `Trainer`'s) serves as it is.
    """
    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if PartialState._shared_state:
            return PartialState()
        with _without_environment_variables(_LAUNCH_VARIABLES):
            return PartialState(cpu=not has_accelerator())
    if PartialState._shared_state and not _torch_distributed_initialized():
        # An earlier command of the same process (`cpfcte-hf run`) ended and tore its process group down: start anew.
        PartialState._reset_state()
    # Without `cpu=True` on a machine without a GPU, PartialState ignores the launcher and every process believes
    # it is alone (each would then do the whole split); `cli.cpu_processes_use_gloo` does the same for training.
    return PartialState(cpu=not has_accelerator())


def shard_indices(count: int, state) -> range:
    """
    The items of `count` (a split's images) this process takes: `process_index`, `process_index + num_processes`,
    ... (all of them alone). Every N-th rather than accelerate's `split_between_processes` (one block each): which
    process writes which mask, and resumes it, stays as it always was.
    """
    return range(state.process_index, count, state.num_processes)


_shared_process_group = 0


@contextmanager
def shared_process_group():
    """
    Several commands in one process (the steps of `cpfcte-hf run`): the process group stays up between them (setting
    it up again in the same processes is not reliable) and is torn down once, when the block ends.
    """
    global _shared_process_group
    _shared_process_group += 1
    try:
        yield
    finally:
        _shared_process_group -= 1
        if _shared_process_group == 0:
            finish_distributed(distributed_state())


def finish_distributed(state=None) -> None:
    """End of a command: wait for every process, then tear the launch's process group down before the interpreter
    exits (a process group left to interpreter shutdown can abort a rank whose peer has already gone), unless the
    command runs inside `shared_process_group`. A process alone has no group to tear down."""
    state = state if state is not None else distributed_state()
    state.wait_for_everyone()
    if _shared_process_group == 0 and state.use_distributed:
        state.destroy_process_group()


def local_process_count(state=None) -> int:
    """Processes of this launch on this machine: `LOCAL_WORLD_SIZE` (set by torchrun / `accelerate launch`), else
    the launch's process count (`state`, default `distributed_state()`)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local and local.isdigit() and int(local) > 0:
        return int(local)
    return (state if state is not None else distributed_state()).num_processes


def cpu_share(state=None) -> int:
    """This process's share of the CPUs it may run on: the CPUs (affinity, container limits) divided by the
    processes of the launch on this machine, at least 1."""
    return max(1, default_num_workers() // local_process_count(state))


def resolve_crf_workers(crf_workers: int | None, state) -> int:
    """CRF worker processes per process: `crf_workers` if given (0: serial), else `cpu_share(state)`."""
    if crf_workers is not None:
        return crf_workers
    return cpu_share(state)


def job_crf_workers(config, state=None) -> int:
    """CRF worker processes per process of a prediction job whose `config` has `crf` and `crf_workers` (stage 1's
    `PseudoLabelConfig`, stage 2's `MultiScaleEvalConfig`): `resolve_crf_workers`, 0 without the CRF."""
    return resolve_crf_workers(config.crf_workers, state) if config.crf else 0


def prediction_threads(state=None, crf_workers: int = 0) -> int:
    """Torch threads of a prediction job's model: `cpu_share(state)`, or 1 where the job refines with CRF worker
    processes (`crf_workers` > 0) in a process whose idle OpenMP threads spin (the package's training setting, which
    `run`, `demo` and `reproduce` keep for their `label` steps: `utils/openmp.py`). There the model's threads would
    spin between its ops on the cores the CRF workers need: the demo's 2,000 pseudo-labels took 111 s with two
    threads and 76 s with one, as long as with two threads that sleep (README, Performance, "OpenMP threads")."""
    if crf_workers > 0 and os.environ.get(WAIT_MARKER) == "training":
        return 1
    return cpu_share(state)


@contextmanager
def job_threads(state=None, crf_workers: int = 0):
    """
    Inside the block, torch runs on `prediction_threads(state, crf_workers)` threads unless `OMP_NUM_THREADS` says
    otherwise (the user's choice; `accelerate launch` and torchrun set it per process). The CRF workers get the
    process's share (`resolve_crf_workers`; `crf_workers` is that number, 0 without the CRF): the model and the CRF
    take turns on one image after another, and idle OpenMP threads sleep rather than spin (`OMP_WAIT_POLICY=PASSIVE`,
    set when `cpfcte_hf` is imported: `utils/openmp.py`), so neither the two halves of a run nor two runs side by
    side burn each other's cores (README, Performance). In a process that spins briefly instead (a command that
    trains, `run` and `demo` among them, whose predictions run here too) a job with CRF workers runs its model on
    one thread.
    """
    import torch

    previous = torch.get_num_threads()
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(prediction_threads(state, crf_workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
