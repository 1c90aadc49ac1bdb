# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The one prediction job: a split's images -> mask files, used by both stages.

`run_prediction_job` is what stage-1 pseudo-labelling (`pseudo_labeling.generate_pseudo_labels`) and stage-2
prediction (`deeplab.training.predict_split`) share:

- sharding: under `accelerate launch` (or `torchrun`) process `rank` of `world` takes images `rank`, `rank + world`,
  ...; `distributed_state` says which;
- one run per output directory: `hold_output_dir` takes an OS file lock (`filelock`) on the directory and records
  who holds it; a second run is refused naming the holder, the lock of a killed run is taken over;
- fingerprinted resume: `prepare_job_dir` refuses a directory made with other settings (`cpfcte_hf.fingerprint`),
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

import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import has_accelerator
from .crf import CRFPool, DenseCRFConfig, default_num_workers
from .fingerprint import check_fingerprint, record_fingerprint
from .inference import restore_mask_size
from .visualization import atomic_write_text, save_mask


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


# ------------------------------------------------------------------------------------ content keys: resume by content

SOURCES_FILE = "sources.json"
JOURNAL_PREFIX = ".sources-"  # `.sources-<rank>.jsonl`: what each process finished since the last compaction


@dataclass(frozen=True)
class ImageSource:
    """
    Where an image's bytes are: a file (`path`; the loaders of `cpfcte_hf.data` keep local images as paths) or the
    bytes themselves (`data`: a Hub parquet row, an image made in memory such as the shapes set's, or, for a column
    that is not a `datasets.Image`, the Arrow value's canonical JSON).
    """

    path: str | None = None
    data: bytes | memoryview | None = None


def _blake2b_file(path: str) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(source: ImageSource, recorded: Mapping | None = None) -> dict:
    """
    What identifies the image's content: `{"blake2b": digest of its bytes}`, plus for a file its `size`,
    `mtime_ns` and `ctime_ns`. The cheap check first: when `recorded` (the key its masks were made from) has the
    same size and times, its digest is reused without reading the file; only a file whose size or times differ is
    read and hashed (a touched but identical file keeps its digest, and the new times are recorded).
    """
    if source.path is None:
        return {"blake2b": hashlib.blake2b(source.data, digest_size=20).hexdigest()}
    stat = os.stat(source.path)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    if recorded is not None and "blake2b" in recorded and all(recorded.get(k) == v for k, v in key.items()):
        return {**key, "blake2b": recorded["blake2b"]}
    return {**key, "blake2b": _blake2b_file(source.path)}


def _source_of(value) -> ImageSource:
    """An Arrow value of an image column -> `ImageSource` (a `datasets.Image` is a struct of `bytes` and `path`)."""
    import pyarrow as pa

    if pa.types.is_struct(value.type) and {"bytes", "path"} <= {f.name for f in value.type}:
        data, path = value["bytes"], value["path"]
        if data.is_valid:
            return ImageSource(data=memoryview(data.as_buffer()))
        if path.is_valid:
            return ImageSource(path=path.as_py())
        raise ValueError("the image has neither bytes nor a path")
    return ImageSource(data=json.dumps(value.as_py(), sort_keys=True, default=str).encode())


class DatasetSources:
    """
    `index -> ImageSource` for the `image` column of a `datasets.Dataset`, read as Arrow in blocks of `block` rows
    (nothing is decoded; a `select`ed or `filter`ed dataset is read through its indices).
    """

    def __init__(self, dataset, column: str = "image", block: int = 1024):
        self.rows = dataset.select_columns([column]).with_format("arrow")
        self.column, self.block = column, block
        self._start, self._values = 0, None

    def __call__(self, index: int) -> ImageSource:
        if self._values is None or not self._start <= index < self._start + len(self._values):
            self._start = index
            self._values = self.rows[index : index + self.block].column(self.column).combine_chunks()
        return _source_of(self._values[index - self._start])


class ContentRecord:
    """
    `<root>/sources.json`: per image id, the content key (`content_key`, plus the image's `inputs`) of the image its
    masks were made from. While a job runs, each process appends one line per finished image to its own journal
    (`<root>/.sources-<rank>.jsonl`), so a killed run loses no key; `compact` folds the journals into
    `sources.json` (the main process, at the start and the end of a job).
    """

    def __init__(self, root: str | os.PathLike, rank: int = 0):
        self.root = Path(root)
        self.path = self.root / SOURCES_FILE
        self.rank = rank
        self._journal = None

    def journals(self) -> list[Path]:
        return sorted(self.root.glob(f"{JOURNAL_PREFIX}*.jsonl"))

    def load(self) -> dict[str, dict]:
        """`{id: key}` of `sources.json` and the journals (an unreadable record counts as absent)."""
        records = {}
        if self.path.is_file():
            try:
                records = json.loads(self.path.read_text(encoding="utf-8"))["images"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning(f"{self.path} is unreadable ({error}): the images of existing masks are re-recorded.")
                records = {}
        for journal in self.journals():
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    records[entry.pop("id")] = entry
                except (ValueError, KeyError, AttributeError):  # the torn last line of a killed process
                    continue
        return records

    def compact(self) -> None:
        """Writes `sources.json` (atomically) from the record and the journals, then deletes the journals."""
        journals = self.journals()
        if journals:
            text = json.dumps({"images": self.load()}, sort_keys=True, separators=(",", ":"))
            atomic_write_text(self.path, text + "\n")
            for journal in journals:
                journal.unlink(missing_ok=True)

    def remove(self) -> None:
        for path in [self.path, *self.journals()]:
            path.unlink(missing_ok=True)

    def append(self, image_id: str, key: Mapping) -> None:
        """Records `key` for `image_id` in this process's journal (one line, flushed at once)."""
        if self._journal is None:
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / f"{JOURNAL_PREFIX}{self.rank}.jsonl"
            self._journal = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered: one write per line
        self._journal.write(json.dumps({"id": image_id, **key}, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def keyed_content(source: ImageSource, inputs, recorded: Mapping | None = None) -> dict:
    """`content_key` of `source` with the image's `inputs` (what else its masks depend on, e.g. its tags)."""
    key = content_key(source, recorded)
    if inputs is not None:
        key["inputs"] = inputs
    return key


def same_content(key: Mapping, recorded: Mapping) -> bool:
    """Whether `key` names the bytes and inputs that `recorded` does (a file's times may differ: touched)."""
    return key.get("blake2b") == recorded.get("blake2b") and key.get("inputs") == recorded.get("inputs")


# ---------------------------------------------------------------------------------- one run per output directory

LOCK_FILE = ".cpfcte-hf.lock"
HOLDER_FILE = ".cpfcte-hf.lock.json"


class OutputDirInUse(OSError):
    """Another run holds the output directory (its pid, host, start time and command are in the message)."""


_held_dirs: dict[str, list] = {}  # real path -> [FileLock, depth, created directories]: nested holds of one process


def describe_holder(holder: Mapping | None) -> str:
    """`pid 123 on host, started 2026-12-02T10:00:00+00:00: cpfcte-hf label ...` (the command cut at 200 chars)."""
    if not holder:
        return "a run that has not written its record yet"
    command = str(holder.get("command", "?"))
    command = command if len(command) <= 200 else command[:197] + "..."
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {command}"


def command_line() -> str:
    """This process's command line as typed: `cpfcte-hf label ...`, `python -m cpfcte_hf label ...`,
    `pseudo_label.py ...` (an interpreter running a script file is left out, and paths are cut to their name)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if len(argv) > 1 and os.path.isfile(argv[1]):  # `python path/to/script`, the console script included
        argv = argv[1:]
    return shlex.join([os.path.basename(argv[0]), *argv[1:]])


def _read_holder(root: Path, attempts: int = 10) -> dict | None:
    """The holder record of `root` (the holder writes it just after locking: a missing one is waited for briefly)."""
    for attempt in range(attempts):
        try:
            return json.loads((root / HOLDER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if attempt + 1 < attempts:
                time.sleep(0.05)
    return None


def create_output_dir(path: str | os.PathLike) -> list[Path]:
    """
    Creates `path` and its missing parents; returns those it created (outermost first).

    Raises:
        NotADirectoryError: `path` or a parent exists and is not a directory.
        PermissionError: `path` cannot be written.
    """
    root = Path(path)
    for candidate in [root, *root.parents]:
        if candidate.exists() and not candidate.is_dir():
            raise NotADirectoryError(
                f"Output directory {str(root)!r}: {str(candidate)!r} exists and is not a directory."
            )
    created = [p for p in [*reversed(root.parents), root] if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK):
        raise PermissionError(f"Output directory {str(root)!r} is not writable.")
    return created


def _lock_output_dir(root: Path) -> list:
    """Locks `root` (created if missing) for this process: `[lock, 1, created directories]`, or `OutputDirInUse`."""
    from filelock import FileLock, Timeout

    created = create_output_dir(root)
    lock = FileLock(root / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputDirInUse(
            f"{root} is in use by another run ({describe_holder(_read_holder(root))}); wait for it to end, or "
            "choose another output directory."
        ) from None
    left = _read_holder(root, attempts=1)
    if left is not None:  # the lock was free: whoever wrote this record was stopped without releasing it
        logger.warning(
            f"{root}: taking over from a run that was stopped without releasing it ({describe_holder(left)})."
        )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
    }
    try:
        atomic_write_text(root / HOLDER_FILE, json.dumps(holder) + "\n")
    except BaseException:
        _unlock_output_dir(root, lock, created)
        raise
    return [lock, 1, created]


def _unlock_output_dir(root: Path, lock, created: list[Path]) -> None:
    """Releases `root` (record and lock file first, while still locked: a run that opened the file before it was
    unlinked finds it unlinked once locked, and filelock drops that lock), then removes the directories this hold
    created if nothing was written into them (a failed start leaves no trace)."""
    (root / HOLDER_FILE).unlink(missing_ok=True)
    (root / LOCK_FILE).unlink(missing_ok=True)
    lock.release()
    if created and not any(path.is_file() for path in created[0].rglob("*")):
        shutil.rmtree(created[0], ignore_errors=True)


@contextmanager
def hold_output_dir(path: str | os.PathLike, state=None):
    """
    One run per output directory. On the main process of a launch (the only one: the ranks of one launch, on one
    machine or several sharing the directory, never lock each other out) takes an OS lock on `path/.cpfcte-hf.lock`
    with `filelock` (released by the OS when the process dies, SIGKILL included) and records the holder (pid,
    host, start time, command) in `path/.cpfcte-hf.lock.json`. A second run is refused at once with
    `OutputDirInUse` naming the holder, on every process of its launch. A record left by a killed run is taken over
    with one log line. `path` is created if missing; on leaving, the lock files are deleted, and so are the
    directories this hold created if nothing was written into them. Nested holds of one process are one hold.
    """
    root = Path(path).absolute()
    key = os.path.realpath(root)
    main = state is None or state.is_main_process
    refused = None
    if main and key in _held_dirs:
        _held_dirs[key][1] += 1
    elif main:
        try:
            _held_dirs[key] = _lock_output_dir(root)
        except OSError as error:  # in use, not a directory, not writable
            refused = error
    if state is not None and state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refused = broadcast_object_list([refused])[0]  # every process of the launch stops, not only the main one
    if refused is not None:
        raise refused
    try:
        yield root
    finally:
        if main:
            _held_dirs[key][1] -= 1
            if _held_dirs[key][1] == 0:
                lock, _, created = _held_dirs.pop(key)
                _unlock_output_dir(root, lock, created)


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
    `clear` (folders or files) and the content record; on the main process then runs `before_record`, removes the
    temporary files of a killed run, folds the journals of a killed run into the content record (`ContentRecord`)
    and records `fingerprint`. Every process waits for that.

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
            ContentRecord(root).remove()
        if before_record is not None:
            before_record()
        removed = remove_temporary_files(root)
        if removed:
            logger.info(f"Removed {removed} temporary file(s) left in {root} by an interrupted run.")
        ContentRecord(root).compact()
        record_fingerprint(root, fingerprint)
    if state is not None:
        state.wait_for_everyone()
    return status


# ------------------------------------------------------------------------------------------ threads and processes


def local_process_count(state=None) -> int:
    """Processes of this launch on this machine: `LOCAL_WORLD_SIZE` (set by torchrun / `accelerate launch`), else
    the launch's process count, else 1."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local and local.isdigit() and int(local) > 0:
        return int(local)
    return state.num_processes if state is not None else 1


def cpu_share(state=None) -> int:
    """This process's share of the CPUs it may run on: the CPUs (affinity, container limits) divided by the
    processes of the launch on this machine, at least 1."""
    return max(1, default_num_workers() // local_process_count(state))


def resolve_crf_workers(crf_workers: int | None, state) -> int:
    """CRF worker processes per process: `crf_workers` if given (0: serial), else `cpu_share(state)`."""
    if crf_workers is not None:
        return crf_workers
    return cpu_share(state)


@contextmanager
def job_threads(state=None):
    """
    Inside the block, torch runs on `cpu_share(state)` threads unless `OMP_NUM_THREADS` says otherwise (the user's
    choice; `accelerate launch` and torchrun set it per process). The CRF workers get the same share
    (`resolve_crf_workers`): the model and the CRF take turns on one image after another, and idle OpenMP threads
    sleep rather than spin (`OMP_WAIT_POLICY=PASSIVE`, set by `cpfcte_hf/__init__.py`), so neither the two halves
    of a run nor two runs side by side burn each other's cores (README, Performance).
    """
    previous = torch.get_num_threads()
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cpu_share(state))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """The tqdm bar of per-image jobs (shown on the main process only: pass `enabled=False` elsewhere)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="img", dynamic_ncols=True)


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
        state: `distributed_state()`.
        sources: dataset index -> `ImageSource` (`DatasetSources(dataset)`): resume by content, `sort_out_shard`.
            `None`: an image whose masks exist is done.
        inputs: `{id: JSON value}`: what else an image's masks depend on (stage 1: its tags); a change recomputes it.
        record_dir: where the content record lives (`ContentRecord`; default: `mask_dir`'s parent).

    Returns:
        `JobCounts` of this process (`gather_counts` sums them over processes).
    """
    mask_dir = Path(mask_dir)
    crf_dir = Path(crf_dir) if crf_dir is not None else None
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    record = None
    if sources is not None:
        record = ContentRecord(record_dir if record_dir is not None else mask_dir.parent, rank=rank)
    shard = list(range(rank, len(ids), world))
    job = None
    try:
        mask_dirs = [mask_dir] + ([crf_dir] if crf_dir is not None else [])
        todo, changed, already_done = sort_out_shard(ids, shard, mask_dirs, overwrite, sources, inputs, record)
        counts = JobCounts(already_done=already_done, record_dir=None if record is None else str(record.root))
        bar = progress_bar(len(shard), initial=already_done, enabled=progress and rank == 0, desc=desc)
        job = _ShardJob(ids, read, predict, mask_dir, crf_dir, counts, bar, sources, inputs, record, changed)
        job.run(todo, batch_size, crf_config, resolve_crf_workers(crf_workers, state))
    except BaseException:
        # Ctrl-C, SIGTERM (see `cpfcte_hf.interrupts`) or a crash: the pool has stopped its workers; what is on
        # disk stays resumable (complete masks only, no temporary files; the keys of finished images recorded).
        if job is not None:
            job.bar.close()
        for directory in {mask_dir.parent, *([crf_dir.parent] if crf_dir is not None else [])}:
            remove_temporary_files(directory)
        raise
    finally:
        if record is not None:
            record.close()
    bar.close()
    counts.written_per_process = [counts.written + len(counts.changed)]
    return counts


class _ShardJob:
    """One process's share of `run_prediction_job`: read, predict, write the argmax masks, CRF, record."""

    def __init__(self, ids, read, predict, mask_dir, crf_dir, counts, bar, sources, inputs, record, changed):
        self.ids, self.read, self.predict = ids, read, predict
        self.mask_dir, self.crf_dir = mask_dir, crf_dir
        self.counts, self.bar = counts, bar
        self.sources, self.inputs, self.record, self.changed = sources, inputs, record, changed
        self.keys: dict[str, dict] = {}  # content keys of the images read, recorded once their masks are written
        self.original_sizes: dict[str, tuple[int, int]] = {}  # images read downscaled: their own size

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
    The `JobCounts` of every process summed (failures and changed ids concatenated); `counts` itself in a single
    process. Then the main process folds the journals into the content record (every process has finished).
    """
    if state is not None:
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
    if counts.record_dir is not None and (state is None or state.is_main_process):
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
    "remove_temporary_files",
    "resolve_crf_workers",
    "run_prediction_job",
    "safe_file_id",
    "same_settings_on_every_process",
    "shared_process_group",
]
