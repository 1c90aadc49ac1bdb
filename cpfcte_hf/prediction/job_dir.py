# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A prediction job's output directory: the mask file of an image id (`safe_file_id`), and the start of a job there:
every process agrees on the settings, a directory made with other settings is refused (or cleared with `overwrite`),
a killed run's temporary files are removed and the settings are recorded (`prepare_job_dir`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ..utils.distributed import distributed_state
from ..utils.fingerprint import check_fingerprint, record_fingerprint
from ..utils.output_dir import remove_temporary_files
from .sources import ContentRecord


logger = logging.getLogger(__name__)

# The mask folders of a labelling output directory: the argmax before the CRF, and after it (`outputs.OutputLayout`).
MASK_SETS = ("bpm", "crf")


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


def same_settings_on_every_process(fingerprint: dict, state) -> None:
    """
    Raises on every process (so none waits forever) when the processes of one job would predict with different
    settings or weights, e.g. a model whose BatchNorm statistics were left different on each rank by training. A
    process alone agrees with itself.
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
    Start of a job in `root` (the fingerprint rule, `cpfcte_hf.utils.fingerprint.check_fingerprint`): refuses a directory
    whose masks were made with other settings (naming what changed); with `overwrite`, deletes `mask_dirs` and
    `clear` (folders or files) and the content record; on the main process then runs `before_record`, removes the
    temporary files of a killed run, folds the journals of a killed run into the content record (`ContentRecord`)
    and records `fingerprint`. Every process waits for that.

    Returns:
        "new", "same" (resume) or "overwrite".

    Raises:
        FingerprintMismatch (a ValueError): other settings, or masks without a record, and no `overwrite`.
    """
    state = state if state is not None else distributed_state()
    same_settings_on_every_process(fingerprint, state)
    has_masks = any(
        path.suffix == ".png" and path.is_file() and not path.name.startswith(".tmp-")
        for folder in mask_dirs
        for path in Path(folder).rglob("*")
    )
    status = check_fingerprint(root, fingerprint, overwrite=overwrite, has_content=has_masks)
    if state.is_main_process:
        if status == "overwrite":
            _clear(root, [*mask_dirs, *clear])
        if before_record is not None:
            before_record()
        removed = remove_temporary_files(root)
        if removed:
            logger.info(f"Removed {removed} temporary file(s) left in {root} by an interrupted run.")
        ContentRecord(root).compact()
        record_fingerprint(root, fingerprint)
    state.wait_for_everyone()
    return status


def _clear(root, paths: Sequence[str | os.PathLike]) -> None:
    """`--overwrite`: deletes `paths` (folders or files) and the content record of `root`."""
    for path in map(Path, paths):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    ContentRecord(root).remove()
