# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Atomic file writes: a file is written next to its target under a temporary name and renamed over it, so that a
reader (or a resumed run) never sees half a file; permissions follow the umask as for a plain `open`.
"""

from __future__ import annotations

import os
import tempfile


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once (there is no read-only call); restored at once


def atomic_write(path: str | os.PathLike, write) -> str:
    """Writes through a temporary file in the destination folder, then renames it over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode `open` would have
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes `data` to `path` atomically: readers see the old file or the whole new one, never a partial one."""
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))
