# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one prediction job: a split's images -> mask files, used by both stages.

`run_prediction_job` is what stage-1 pseudo-labelling (`pseudo_labeling.generate_pseudo_labels`) and stage-2
prediction (`deeplab.training.predict_split`) share:

- sharding: under `accelerate launch` (or `torchrun`) process `rank` of `world` takes images `rank`, `rank + world`,
  ...; `distributed_state` says which;
- fingerprinted resume: `prepare_job_dir` refuses a directory made with other settings (`cpfcte_hf.fingerprint`),
  clears it with `overwrite`, and records the settings; the job then skips the images whose masks exist;
- the model: `read` one image, `predict` a batch of them (a failed batch is retried image by image), the argmax
  into `<mask_dir>/<id>.png`;
- the dense CRF over a process pool (`CRFPool.map`) into `<crf_dir>/<id>.png`;
- failure accounting: an image that cannot be read, predicted, refined or written is logged with its id and counted
  (`Failure`), the split goes on; a killed job leaves only complete masks (`remove_temporary_files`);
- gathering: `gather_counts` sums what every process did.

Each stage writes its own report from these counts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import has_accelerator
from .crf import CRFPool, DenseCRFConfig, default_num_workers
from .fingerprint import check_fingerprint, record_fingerprint
from .inference import restore_mask_size
from .visualization import save_mask


logger = logging.getLogger(__name__)


@dataclass
class Failure:
    """One image that could not be processed: which, at what stage, why."""

    id: str
    stage: str
    error: str


@dataclass
class JobCounts:
    """What a prediction job did: masks written, images already done, images that failed (and per process)."""

    written: int = 0
    already_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    written_per_process: list[int] = field(default_factory=list)


def distributed_state():
    """accelerate's PartialState when launched with several processes, else None (plain single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    if PartialState._shared_state and not torch.distributed.is_initialized():
        # An earlier command of the same process (`cpfcte-hf run`) ended and tore its process group down: start anew.
        PartialState._reset_state()
    # Without `cpu=True` on a machine without a GPU, PartialState ignores the launcher and every process believes
    # it is alone (each would then do the whole split); `cli.cpu_processes_use_gloo` does the same for training.
    return PartialState(cpu=not has_accelerator())


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


def finish_distributed(state) -> None:
    """End of a command: wait for every process, then tear the process group down before the interpreter exits (a
    process group left to interpreter shutdown can abort a rank whose peer has already gone), unless the command
    runs inside `shared_process_group`."""
    if state is not None:
        state.wait_for_everyone()
        if _shared_process_group == 0:
            state.destroy_process_group()


def safe_file_id(image_id) -> str:
    """`image_id` if `<dir>/<image_id>.png` stays inside `<dir>`, else `ValueError`.

    An id may name sub-folders (`cats/01`: the mask mirrors the image's relative path, `crf/cats/01.png`); it may
    not be absolute, contain `..`, `.` or empty parts, a backslash, or a NUL.
    """
    image_id = str(image_id)
    parts = image_id.split("/")
    if (
        not image_id
        or image_id.startswith("/")
        or "\\" in image_id
        or "\x00" in image_id
        or any(part in ("", ".", "..") for part in parts)
        or os.path.isabs(image_id)
    ):
        raise ValueError(
            f"Image id {image_id!r} cannot be a file name under the output directory (ids are relative paths "
            "without '..', '.' or empty parts)."
        )
    return image_id


def remove_temporary_files(root: str | os.PathLike) -> int:
    """Deletes the `.tmp-*` files that atomic writes of a killed process left under `root`; returns how many."""
    removed = 0
    for path in Path(root).rglob(".tmp-*"):
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:  # another process of the same run got there first
                pass
    return removed


def same_settings_on_every_process(fingerprint: dict, state) -> None:
    """
    Raises on every process (so none waits forever) when the processes of one job would predict with different
    settings or weights, e.g. a model whose BatchNorm statistics were left different on each rank by training.
    """
    from accelerate.utils import gather_object

    settings = gather_object([json.dumps(fingerprint, sort_keys=True, default=str)])
    if len(set(settings)) > 1:
        first, other = json.loads(settings[0]), next(json.loads(s) for s in settings if s != settings[0])
        changed = sorted(key for key in set(first) | set(other) if first.get(key) != other.get(key))
        raise ValueError(
            f"The {state.num_processes} processes of this job disagree on {', '.join(changed)}: each would write "
            "masks made with other settings. Load the model from the same checkpoint on every process."
        )


def prepare_job_dir(
    root: str | os.PathLike,
    fingerprint: dict,
    overwrite: bool,
    mask_dirs: Sequence[str | os.PathLike],
    state=None,
    clear: Sequence[str | os.PathLike] = (),
    before_record: Callable[[], None] | None = None,
) -> str:
    """
    Start of a job in `root` (the fingerprint rule, `cpfcte_hf.fingerprint.check_fingerprint`): refuses a directory
    whose masks were made with other settings (naming what changed); with `overwrite`, deletes `mask_dirs` and
    `clear` (folders or files); on the main process then runs `before_record`, removes the temporary files of a
    killed run and records `fingerprint`. Every process waits for that.

    Returns:
        "new", "same" (resume) or "overwrite".

    Raises:
        FingerprintMismatch (a ValueError): other settings, or masks without a record, and no `overwrite`.
    """
    if state is not None and state.num_processes > 1:
        same_settings_on_every_process(fingerprint, state)
    has_masks = any(
        path.suffix == ".png" and path.is_file() and not path.name.startswith(".tmp-")
        for folder in mask_dirs
        for path in Path(folder).rglob("*")
    )
    status = check_fingerprint(root, fingerprint, overwrite=overwrite, has_content=has_masks)
    if state is None or state.is_main_process:
        if status == "overwrite":
            for path in map(Path, [*mask_dirs, *clear]):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if before_record is not None:
            before_record()
        removed = remove_temporary_files(root)
        if removed:
            logger.info(f"Removed {removed} temporary file(s) left in {root} by an interrupted run.")
        record_fingerprint(root, fingerprint)
    if state is not None:
        state.wait_for_everyone()
    return status


def resolve_crf_workers(crf_workers: int | None, state) -> int:
    """CRF worker processes per process: `crf_workers` if given (0: serial), else the CPUs divided by the processes."""
    if crf_workers is not None:
        return crf_workers
    return max(1, default_num_workers() // (state.num_processes if state is not None else 1))


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """The tqdm bar of per-image jobs (shown on the main process only: pass `enabled=False` elsewhere)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="img", dynamic_ncols=True)


def run_prediction_job(
    ids: Sequence[str],
    read: Callable[[int], tuple[np.ndarray, Any, tuple[int, int] | None]],
    predict: Callable[[list[tuple[np.ndarray, Any]]], Sequence],
    mask_dir: str | os.PathLike,
    crf_dir: str | os.PathLike | None = None,
    crf_config: DenseCRFConfig | None = None,
    crf_workers: int | None = None,
    batch_size: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "predict",
    state=None,
) -> JobCounts:
    """
    Masks for this process's shard of `ids` (see the module docstring).

    Args:
        ids: image ids, one per dataset index (file names under `mask_dir` / `crf_dir`).
        read: dataset index -> `(rgb, extra, original_size)`: the `(H, W, 3)` uint8 image the model and the CRF
            see, what `predict` needs with it (e.g. its class labels), and the `(height, width)` its masks are
            written at when `rgb` was downscaled (else `None`). An exception is a "read" failure.
        predict: `[(rgb, extra), ...]` -> one `(C, H, W)` class probability map per image (tensor or array). An
            exception is retried image by image, then is a "model" failure.
        mask_dir: where the argmax masks go (`<id>.png`).
        crf_dir: where the CRF-refined masks go; `None` for no CRF.
        crf_config, crf_workers: the dense CRF and its worker processes per process (`None`: the CPUs divided by
            the processes; 0: serial).
        batch_size: images per `predict` call.
        overwrite: recompute masks that exist (otherwise a rerun only does the missing ones).
        progress, desc: the progress bar (main process only).
        state: `distributed_state()`.

    Returns:
        `JobCounts` of this process (`gather_counts` sums them over processes).
    """
    mask_dir = Path(mask_dir)
    crf_dir = Path(crf_dir) if crf_dir is not None else None
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)

    def done(image_id: str) -> bool:
        if overwrite or not (mask_dir / f"{image_id}.png").is_file():
            return False
        return crf_dir is None or (crf_dir / f"{image_id}.png").is_file()

    shard = list(range(rank, len(ids), world))
    todo = [index for index in shard if not done(ids[index])]
    counts = JobCounts(already_done=len(shard) - len(todo))
    crf_workers = resolve_crf_workers(crf_workers, state)
    bar = progress_bar(len(shard), initial=counts.already_done, enabled=progress and rank == 0, desc=desc)
    original_sizes: dict[str, tuple[int, int]] = {}  # images read downscaled: their own size

    def fail(image_id: str, stage: str, error) -> None:
        message = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
        logger.warning(f"[{image_id}] {stage} failed: {message}")
        counts.failures.append(Failure(image_id, stage, message))
        bar.update(1)

    def run_model(items):
        """[(id, rgb, extra)] -> [(item, (C, H, W) array)]; a failed batch is retried image by image."""
        try:
            maps = predict([(rgb, extra) for _, rgb, extra in items])
            return [
                (item, m.numpy() if isinstance(m, torch.Tensor) else np.asarray(m)) for item, m in zip(items, maps)
            ]
        except Exception as error:  # noqa: BLE001
            if len(items) > 1:
                return [pair for item in items for pair in run_model([item])]
            fail(items[0][0], "model", error)
            return []

    def model_masks():
        """Reads, predicts and writes the argmax masks; yields `(id, rgb, probabilities)` for the CRF."""
        for start in range(0, len(todo), batch_size):
            batch = []
            for index in todo[start : start + batch_size]:
                image_id = ids[index]
                try:
                    safe_file_id(image_id)
                    rgb, extra, original_size = read(index)
                except Exception as error:  # noqa: BLE001 - one bad image must not stop the split
                    fail(image_id, "read", error)
                    continue
                if original_size is not None:
                    original_sizes[image_id] = tuple(original_size)
                batch.append((image_id, rgb, extra))
            for (image_id, rgb, _), probabilities in run_model(batch) if batch else []:
                mask = probabilities.argmax(axis=0).astype(np.uint8)
                try:
                    save_mask(restore_mask_size(mask, original_sizes.get(image_id)), mask_dir / f"{image_id}.png")
                except OSError as error:
                    fail(image_id, "write", error)
                    continue
                if crf_dir is None:
                    counts.written += 1
                    bar.update(1)
                else:
                    yield image_id, rgb, probabilities

    try:
        if crf_dir is None:
            for _ in model_masks():
                pass
        else:
            with CRFPool(crf_config, num_workers=crf_workers) as pool:
                for result in pool.map(model_masks()):
                    original = original_sizes.pop(result.key, None)
                    if not result.ok:
                        fail(result.key, "crf", result.error)
                        continue
                    try:
                        save_mask(restore_mask_size(result.mask, original), crf_dir / f"{result.key}.png")
                    except OSError as error:
                        fail(result.key, "write", error)
                        continue
                    counts.written += 1
                    bar.update(1)
    except BaseException:
        # Ctrl-C, SIGTERM (see `cpfcte_hf.interrupts`) or a crash: the pool has stopped its workers; what is on
        # disk stays resumable (complete masks only, no temporary files).
        bar.close()
        for directory in {mask_dir.parent, *([crf_dir.parent] if crf_dir is not None else [])}:
            remove_temporary_files(directory)
        raise
    bar.close()
    counts.written_per_process = [counts.written]
    return counts


def gather_counts(state, counts: JobCounts) -> JobCounts:
    """The `JobCounts` of every process summed (failures concatenated); `counts` itself in a single process."""
    if state is None:
        return counts
    from accelerate.utils import gather_object

    gathered = gather_object([(counts.written, counts.already_done, [asdict(f) for f in counts.failures])])
    return JobCounts(
        written=sum(c[0] for c in gathered),
        already_done=sum(c[1] for c in gathered),
        failures=[Failure(**f) for _, _, fs in gathered for f in fs],
        written_per_process=[c[0] for c in gathered],
    )


__all__ = [
    "Failure",
    "JobCounts",
    "distributed_state",
    "finish_distributed",
    "gather_counts",
    "prepare_job_dir",
    "progress_bar",
    "remove_temporary_files",
    "resolve_crf_workers",
    "run_prediction_job",
    "safe_file_id",
    "same_settings_on_every_process",
    "shared_process_group",
]
