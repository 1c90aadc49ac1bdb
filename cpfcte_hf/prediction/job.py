# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one prediction job: a split's images -> mask files, used by both stages.

`run_prediction_job` is what stage-1 pseudo-labelling (`prediction.pseudo_labels.generate_pseudo_labels`) and stage-2
prediction (`prediction.segment.predict_split`) share:

- sharding: under `accelerate launch` (or `torchrun`) process `rank` of `world` takes images `rank`, `rank + world`,
  ... (`shard_indices` of `distributed_state()`, the whole split in a process alone);
- one run per output directory: `hold_output_dir` takes an OS file lock (`filelock`) on the directory and records
  who holds it; a second run is refused naming the holder, the lock of a killed run is taken over;
- fingerprinted resume: `prepare_job_dir` refuses a directory made with other settings (`cpfcte_hf.utils.fingerprint`),
  clears it with `overwrite`, and records the settings; the job then skips the images whose masks exist and were
  made from the same image: `sources.json` records each image's content key (`content_key`: size and times of its
  file, a digest of its bytes), and an image whose bytes changed since is recomputed and counted as changed;
- the model: `read` one image, `predict` a batch of them (a failed batch is retried image by image), the argmax
  into `<mask_dir>/<id>.png`;
- the dense CRF over a process pool (`CRFPool.map`) into `<crf_dir>/<id>.png`;
- failure accounting: an image that cannot be read, predicted, refined or written is logged with its id and counted
  (`Failure`), the split goes on; a killed job leaves only complete masks (`remove_temporary_files`);
- gathering: `gather_counts` sums what every process did;
- threads: `resolve_crf_workers` and `cpu_share` give each process of a launch its share of the machine's CPUs.

Each stage writes its own report from these counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.cpfcte.crf import CRFPool, DenseCRFConfig
from ..models.cpfcte.inference import restore_mask_size
from ..models.cpfcte.visualization import save_mask
from ..utils.distributed import (
    distributed_state,
    finish_distributed,
    resolve_crf_workers,
    shard_indices,
    shared_process_group,
)
from ..utils.output_dir import (
    remove_temporary_files,
)
from ..utils.progress import progress_bar
from .job_dir import prepare_job_dir, safe_file_id, same_settings_on_every_process
from .sources import (
    ContentRecord,
    ImageSource,
    keyed_content,
    same_content,
)


logger = logging.getLogger(__name__)


@dataclass
class Failure:
    """One image that could not be processed: which, at what stage, why."""

    id: str
    stage: str
    error: str


@dataclass
class JobCounts:
    """
    What a prediction job did, one count per image: masks `written` (new), `changed` (ids of images whose bytes or
    inputs changed since their masks were made: recomputed), `already_done`, `failures` (a changed image that fails
    is a failure); masks written per process; and the folder of its content record (`ContentRecord`).
    """

    written: int = 0
    already_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    written_per_process: list[int] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    record_dir: str | None = None


def require_columns(dataset, names: Sequence[str], what: str = "dataset") -> None:
    """Refuses a dataset without the columns `names` (`image` and `id` for a prediction job), naming what it has;
    `what` is how the message calls the dataset."""
    columns = set(dataset.column_names)
    for required in names:
        if required not in columns:
            raise ValueError(f"The {what} needs an {required!r} column; it has {sorted(columns)}.")


# ------------------------------------------------------------------------------------------ threads and processes


def sort_out_shard(
    ids: Sequence[str],
    shard: Sequence[int],
    mask_dirs: Sequence[Path],
    overwrite: bool,
    sources: Callable[[int], ImageSource] | None,
    inputs: Mapping[str, Any] | None,
    record: ContentRecord | None,
) -> tuple[list[int], set[str], int]:
    """
    Which images of `shard` (dataset indices) need their masks computed: `(todo, changed ids, already done)`.

    An image is done when all its masks exist and (with `sources`) it is the image they were made from
    (`keyed_content` against the record: size and times first, the bytes' digest only when those differ). A changed
    image (other bytes or inputs) loses its masks here and is recomputed; a touched but identical one is done and its
    new key recorded; masks without a recorded key (an older version wrote them) are kept and their image's key
    recorded, with one log line.
    """
    recorded = record.load() if record is not None and not overwrite else {}
    todo, changed, adopted = [], set(), 0
    folders = [os.fspath(folder) for folder in mask_dirs]  # plain strings: 10,000 images cost 20,000 `stat`s anyway
    for index in shard:
        image_id = ids[index]
        masks = [os.path.join(folder, f"{image_id}.png") for folder in folders]
        if overwrite or not all(os.path.isfile(mask) for mask in masks):
            todo.append(index)
            continue
        if sources is None:
            continue
        old = recorded.get(image_id)
        try:
            key = keyed_content(sources(index), None if inputs is None else inputs.get(image_id), old)
        except (OSError, ValueError):  # the file went away: recomputing reports why
            key = None
        if key is not None and (old is None or same_content(key, old)):
            adopted += old is None
            if key != old:
                record.append(image_id, key)
            continue
        changed.add(image_id)
        todo.append(index)
        for mask in masks:
            os.remove(mask)
    if adopted:
        logger.warning(
            f"{adopted} image(s) had masks but no record of the image they were made from (an older version wrote "
            f"them): kept, and their images' content recorded in {record.path}."
        )
    return todo, changed, len(shard) - len(todo)


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
    sources: Callable[[int], ImageSource] | None = None,
    inputs: Mapping[str, Any] | None = None,
    record_dir: str | os.PathLike | None = None,
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
        crf_config, crf_workers: the dense CRF and its worker processes per process (`None`: `cpu_share`; 0:
            serial).
        batch_size: images per `predict` call.
        overwrite: recompute masks that exist (otherwise a rerun only does the missing and the changed ones).
        progress, desc: the progress bar (main process only).
        state: `distributed_state()` (the default).
        sources: dataset index -> `ImageSource` (`DatasetSources(dataset)`): resume by content, `sort_out_shard`.
            `None`: an image whose masks exist is done.
        inputs: `{id: JSON value}`: what else an image's masks depend on (stage 1: its tags); a change recomputes it.
        record_dir: where the content record lives (`ContentRecord`; default: `mask_dir`'s parent).

    Returns:
        `JobCounts` of this process (`gather_counts` sums them over processes).
    """
    state = state if state is not None else distributed_state()
    job = _ShardJob(ids, read, predict, mask_dir, crf_dir, sources, inputs, record_dir, rank=state.process_index)
    try:
        todo = job.sort_out(shard_indices(len(ids), state), overwrite, progress and state.is_main_process, desc)
        job.run(todo, batch_size, crf_config, resolve_crf_workers(crf_workers, state))
    except BaseException:
        # Ctrl-C, SIGTERM (see `cpfcte_hf.utils.interrupts`) or a crash: the pool has stopped its workers; what is on
        # disk stays resumable (complete masks only, no temporary files; the keys of finished images recorded).
        job.leave_resumable()
        raise
    finally:
        job.close_record()
    return job.finish_counts()


class _ShardJob:
    """One process's share of `run_prediction_job`: sort out its images, then read, predict, write the argmax masks,
    CRF, record; the counts of what it did."""

    def __init__(self, ids, read, predict, mask_dir, crf_dir, sources, inputs, record_dir, rank: int):
        self.ids, self.read, self.predict = ids, read, predict
        self.mask_dir, self.crf_dir = Path(mask_dir), Path(crf_dir) if crf_dir is not None else None
        self.sources, self.inputs = sources, inputs
        self.record = None  # the content record (resume by content), kept with `sources` only
        if sources is not None:
            self.record = ContentRecord(record_dir if record_dir is not None else self.mask_dir.parent, rank=rank)
        self.counts = JobCounts(record_dir=None if self.record is None else str(self.record.root))
        self.changed: set[str] = set()  # ids whose image changed since their masks were made
        self.bar = None
        self.keys: dict[str, dict] = {}  # content keys of the images read, recorded once their masks are written
        self.original_sizes: dict[str, tuple[int, int]] = {}  # images read downscaled: their own size

    def sort_out(self, shard: Sequence[int], overwrite: bool, progress: bool, desc: str) -> list[int]:
        """The indices of `shard` whose masks are to be computed (`sort_out_shard`); starts the progress bar."""
        mask_dirs = [self.mask_dir] + ([self.crf_dir] if self.crf_dir is not None else [])
        shard = list(shard)
        todo, self.changed, already_done = sort_out_shard(
            self.ids, shard, mask_dirs, overwrite, self.sources, self.inputs, self.record
        )
        self.counts.already_done = already_done
        self.bar = progress_bar(len(shard), initial=already_done, enabled=progress, desc=desc)
        return todo

    def leave_resumable(self) -> None:
        """After an interruption or a crash: no progress bar, no temporary files."""
        if self.bar is not None:
            self.bar.close()
        for directory in {self.mask_dir.parent, *([self.crf_dir.parent] if self.crf_dir is not None else [])}:
            remove_temporary_files(directory)

    def close_record(self) -> None:
        if self.record is not None:
            self.record.close()

    def finish_counts(self) -> JobCounts:
        """The counts of this process, once its images are done."""
        self.bar.close()
        self.counts.written_per_process = [self.counts.written + len(self.counts.changed)]
        return self.counts

    def fail(self, image_id: str, stage: str, error) -> None:
        message = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
        logger.warning(f"[{image_id}] {stage} failed: {message}")
        self.counts.failures.append(Failure(image_id, stage, message))
        self.keys.pop(image_id, None)
        self.bar.update(1)

    def finish(self, image_id: str) -> None:
        """All masks of `image_id` are written: count it and record the content they were made from."""
        if image_id in self.changed:
            self.counts.changed.append(image_id)
        else:
            self.counts.written += 1
        key = self.keys.pop(image_id, None)
        if key is not None:
            self.record.append(image_id, key)
        self.bar.update(1)

    def read_item(self, index: int):
        """`(id, rgb, extra)` of dataset index `index`, its content key noted; `None` after a "read" failure."""
        image_id = self.ids[index]
        try:
            safe_file_id(image_id)
            if self.sources is not None:  # before decoding: a file changed meanwhile is found changed next time
                inputs = None if self.inputs is None else self.inputs.get(image_id)
                self.keys[image_id] = keyed_content(self.sources(index), inputs)
            rgb, extra, original_size = self.read(index)
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the split
            self.fail(image_id, "read", error)
            return None
        if original_size is not None:
            self.original_sizes[image_id] = tuple(original_size)
        return image_id, rgb, extra

    def run_model(self, items):
        """[(id, rgb, extra)] -> [(item, (C, H, W) array)]; a failed batch is retried image by image. A `predict`
        that returns a pair `(mask map, CRF input)` per image gives the CRF its own input (`--crf_upsampling`)."""

        def array(m):
            if isinstance(m, tuple):
                return tuple(array(part) for part in m)
            return m.numpy() if isinstance(m, torch.Tensor) else np.asarray(m)

        try:
            maps = self.predict([(rgb, extra) for _, rgb, extra in items])
            return [(item, array(m)) for item, m in zip(items, maps)]
        except Exception as error:  # noqa: BLE001
            if len(items) > 1:
                return [pair for item in items for pair in self.run_model([item])]
            self.fail(items[0][0], "model", error)
            return []

    def write(self, mask: np.ndarray, folder: Path, image_id: str, original_size) -> bool:
        try:
            save_mask(restore_mask_size(mask, original_size), folder / f"{image_id}.png")
            return True
        except OSError as error:
            self.fail(image_id, "write", error)
            return False

    def model_masks(self, todo: Sequence[int], batch_size: int):
        """Reads, predicts and writes the argmax masks; yields `(id, rgb, probabilities)` for the CRF."""
        for start in range(0, len(todo), batch_size):
            batch = [item for item in map(self.read_item, todo[start : start + batch_size]) if item is not None]
            for (image_id, rgb, _), probabilities in self.run_model(batch) if batch else []:
                probabilities, crf_input = probabilities if isinstance(probabilities, tuple) else (probabilities,) * 2
                mask = probabilities.argmax(axis=0).astype(np.uint8)
                if not self.write(mask, self.mask_dir, image_id, self.original_sizes.get(image_id)):
                    continue
                if self.crf_dir is None:
                    self.finish(image_id)
                else:
                    yield image_id, rgb, crf_input

    def run(self, todo: Sequence[int], batch_size: int, crf_config, crf_workers: int) -> None:
        if self.crf_dir is None:
            for _ in self.model_masks(todo, batch_size):
                pass
            return
        with CRFPool(crf_config, num_workers=crf_workers) as pool:
            for result in pool.map(self.model_masks(todo, batch_size)):
                original = self.original_sizes.pop(result.key, None)
                if not result.ok:
                    self.fail(result.key, "crf", result.error)
                elif self.write(result.mask, self.crf_dir, result.key, original):
                    self.finish(result.key)


def gather_counts(state, counts: JobCounts) -> JobCounts:
    """
    The `JobCounts` of every process summed (failures and changed ids concatenated); `counts` itself in a process
    alone. Then the main process folds the journals into the content record (every process has finished). `state`:
    `distributed_state()` if None.
    """
    state = state if state is not None else distributed_state()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = gather_object(
            [(counts.written, counts.already_done, [asdict(f) for f in counts.failures], counts.changed)]
        )
        counts = JobCounts(
            written=sum(c[0] for c in gathered),
            already_done=sum(c[1] for c in gathered),
            failures=[Failure(**f) for _, _, fs, _ in gathered for f in fs],
            written_per_process=[c[0] + len(c[3]) for c in gathered],
            changed=[i for *_, changed in gathered for i in changed],
            record_dir=counts.record_dir,
        )
    if counts.record_dir is not None and state.is_main_process:
        ContentRecord(counts.record_dir).compact()
    return counts


__all__ = [
    "Failure",
    "JobCounts",
    "distributed_state",
    "finish_distributed",
    "gather_counts",
    "prepare_job_dir",
    "progress_bar",
    "require_columns",
    "run_prediction_job",
    "safe_file_id",
    "same_settings_on_every_process",
    "shared_process_group",
]
