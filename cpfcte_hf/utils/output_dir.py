# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""One run per output directory: a lock file (`.cpfcte-hf.lock`, filelock) and its holder record (`.lock.json`: pid,
host, start time, command), taken before anything is written and released at the end; a lock left by a killed run is
taken over with a log line. A failed start removes what it created. Also the temporary files an interrupted atomic
write leaves behind.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .io import atomic_write_text


logger = logging.getLogger(__name__)

_held_dirs: dict[str, list] = {}  # real path -> [FileLock, depth, created directories]: nested holds of one process


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


LOCK_FILE = ".cpfcte-hf.lock"


HOLDER_FILE = ".cpfcte-hf.lock.json"


class OutputDirInUse(OSError):
    """Another run holds the output directory (its pid, host, start time and command are in the message)."""


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
    `state`: `distributed_state()` (the default).
    """
    from accelerate.utils import broadcast_object_list

    from .distributed import distributed_state

    state = state if state is not None else distributed_state()
    root = Path(path).absolute()
    key = os.path.realpath(root)
    main = state.is_main_process
    refused = None
    if main and key in _held_dirs:
        _held_dirs[key][1] += 1
    elif main:
        try:
            _held_dirs[key] = _lock_output_dir(root)
        except OSError as error:  # in use, not a directory, not writable
            refused = error
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


def prepare_output_dir(path: str | os.PathLike, subdirectories: Sequence[str] = ()) -> Path:
    """
    Creates the output directory (and `subdirectories`) and checks it can be written
    (`cpfcte_hf.prediction.job.create_output_dir`).

    Raises:
        NotADirectoryError: `path` (or a parent) exists and is a file.
        PermissionError: it cannot be written.
    """
    root = Path(path)
    create_output_dir(root)
    for sub in subdirectories:
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root
