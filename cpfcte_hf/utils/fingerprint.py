# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The fingerprint rule: an output directory records what determines its content, and a rerun resumes only
into a directory made with the same settings.

A fingerprint is a JSON-able dict of everything that decides the files a step writes (for pseudo-labels: the
model's weights, inference size/scales/flip, label masking, the CRF and its parameters, the classes). The step
calls `check_fingerprint` before writing anything:

```python
>>> from cpfcte_hf.utils.fingerprint import check_fingerprint, record_fingerprint, weights_digest
>>> fingerprint = {"model_weights": weights_digest(model), "size": 960, "crf": {...}}
>>> status = check_fingerprint(out_dir, fingerprint, overwrite=False, has_content=any_masks_exist)
>>> # "new": nothing there; "same": resume; "overwrite": the caller clears its files.
>>> # A different fingerprint (or content without one) raises FingerprintMismatch naming what changed.
>>> record_fingerprint(out_dir, fingerprint)
```

`check_fingerprint` reads and compares; `record_fingerprint` writes `fingerprint.json` atomically;
`weights_digest(model)` is the model part most steps need.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path


FINGERPRINT_FILE = "fingerprint.json"


class FingerprintMismatch(ValueError):
    """An output directory was made with other settings than the ones asked for; `changes` lists what differs."""

    def __init__(self, message: str, changes: list[str]):
        super().__init__(message)
        self.changes = changes


def canonical_json(value) -> str:
    """JSON with sorted keys and no whitespace: equal fingerprints give equal text (and equal digests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint_digest(fingerprint: Mapping) -> str:
    """sha256 of the canonical JSON of `fingerprint` (a short way to compare or name a fingerprint)."""
    return hashlib.sha256(canonical_json(fingerprint).encode("utf-8")).hexdigest()


def weights_digest(model) -> str:
    """
    sha256 of a torch module's weights as they are in memory (names, dtypes, shapes and bytes, in name order).

    Hashing the loaded tensors rather than the files covers every way a model arrives (a directory, a Hub id, a
    model built or changed in Python) and gives the same digest for the same weights saved as safetensors or as
    a `.bin`. It reads each tensor once (about 1 s for ViT-B's 350 MB on a CPU).
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
        data = tensor.to("cpu").contiguous().reshape(-1)
        if data.numel():
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_fingerprint(directory: str | os.PathLike, name: str = FINGERPRINT_FILE) -> dict | None:
    """The fingerprint recorded in `directory`, or `None` when there is none. An unreadable file is a ValueError."""
    path = Path(directory) / name
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable fingerprint ({error}); pass --overwrite to recompute.") from error
    if not isinstance(recorded, dict) or not isinstance(recorded.get("fingerprint"), dict):
        raise ValueError(f"{path}: not a fingerprint file; pass --overwrite to recompute.")
    return recorded["fingerprint"]


def record_fingerprint(directory: str | os.PathLike, fingerprint: Mapping, name: str = FINGERPRINT_FILE) -> Path:
    """Writes `fingerprint` (and its digest) to `directory/name`, atomically. Returns the path."""
    from .io import atomic_write_text

    path = Path(directory) / name
    payload = {"digest": fingerprint_digest(fingerprint), "fingerprint": dict(fingerprint)}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path


def diff_fingerprints(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Human-readable differences, one per changed leaf: `"crf.bilateral_sxy: 67.0 -> 50.0"`."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        label = f"{prefix}{key}"
        if key not in old:
            changes.append(f"{label}: (not recorded) -> {_short(new[key])}")
        elif key not in new:
            changes.append(f"{label}: {_short(old[key])} -> (not set)")
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            changes.extend(diff_fingerprints(old[key], new[key], prefix=f"{label}."))
        elif canonical_json(old[key]) != canonical_json(new[key]):
            changes.append(f"{label}: {_short(old[key])} -> {_short(new[key])}")
    return changes


def _short(value, limit: int = 80) -> str:
    text = canonical_json(value)
    if isinstance(value, str) and len(value) == 64:  # a sha256: its first 12 digits are enough to tell apart
        return value[:12]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_fingerprint(
    directory: str | os.PathLike,
    fingerprint: Mapping,
    overwrite: bool = False,
    has_content: bool = False,
    name: str = FINGERPRINT_FILE,
) -> str:
    """
    Decides whether a step may write into `directory`, made before or not.

    Args:
        directory: the step's output directory.
        fingerprint: what determines the step's files now (JSON-able).
        overwrite: the user asked to recompute: the caller will clear its files.
        has_content: the directory already holds files of this step (e.g. masks). Content without a recorded
            fingerprint (an older version, another tool) cannot be trusted, so it is treated as a mismatch.

    Returns:
        `"new"` (nothing recorded, nothing there), `"same"` (resume: the recorded fingerprint equals this one) or
        `"overwrite"` (asked for, and something was there).

    Raises:
        FingerprintMismatch: the recorded settings differ (the message names each change) or there is content
            without a record, and `overwrite` is False.
    """
    recorded = None if overwrite else read_fingerprint(directory, name)
    if overwrite:
        return "overwrite" if has_content or (Path(directory) / name).exists() else "new"
    if recorded is None:
        if not has_content:
            return "new"
        raise FingerprintMismatch(
            f"{directory} already holds results but no record ({name}) of the settings that made them (an older "
            "version or another tool), so they cannot be resumed safely. Pass --overwrite to recompute them, or "
            "choose another output directory.",
            ["(no fingerprint recorded)"],
        )
    changes = diff_fingerprints(recorded, fingerprint)
    if not changes:
        return "same"
    shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    raise FingerprintMismatch(
        f"{directory} was made with other settings, so its results would be stale: {shown}. Pass --overwrite to "
        "recompute them (the old results are deleted), or choose another output directory.",
        changes,
    )


__all__ = [
    "FINGERPRINT_FILE",
    "FingerprintMismatch",
    "canonical_json",
    "check_fingerprint",
    "diff_fingerprints",
    "fingerprint_digest",
    "read_fingerprint",
    "record_fingerprint",
    "weights_digest",
]
