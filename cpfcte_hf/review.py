# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A person's decisions on a labelling run's masks: `OUTPUT_DIR/review.json`.

`cpfcte-hf app --review OUTPUT_DIR` writes it; `train-deeplab` leaves the rejected images out of training. Format:

```json
{"format": "cpfcte-hf-review", "version": 1,
 "decisions": {"<image id, as the masks are named, without .png>":
     {"decision": "accept" | "reject" | "retag", "tags": ["class names, only for retag"], "time": "<ISO 8601 UTC>"}}}
```

An absent file means no decisions; a malformed one is a `ReviewFileError` (a `ValueError`) naming the file. Writes
(`record_decision`) happen under the output directory's lock (`prediction.hold_output_dir`), so that a review never
interleaves with a `label` run into the same directory, and are atomic (a reader sees the old file or the new one).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from .utils.io import atomic_write_text
from .utils.output_dir import hold_output_dir


REVIEW_FILE = "review.json"
REVIEW_FORMAT = "cpfcte-hf-review"
REVIEW_VERSION = 1
DECISIONS = ("accept", "reject", "retag")
# The directory's file lock is one hold per process (nested holds of its threads share it): the read-modify-write of
# the decisions is also serialised between the threads of one process (a page's simultaneous clicks).
_WRITE_LOCK = threading.Lock()


class ReviewFileError(ValueError):
    """`review.json` exists but is not a review file of this format (the message names it and what is wrong)."""


def review_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / REVIEW_FILE


def _check_decision(path: Path, image_id, entry) -> None:
    if not isinstance(image_id, str) or not image_id:
        raise ReviewFileError(f"{path}: an image id must be a non-empty string, got {image_id!r}.")
    if not isinstance(entry, dict) or entry.get("decision") not in DECISIONS:
        raise ReviewFileError(f"{path}: image {image_id!r}: the decision must be one of {', '.join(DECISIONS)}.")
    tags = entry.get("tags")
    if entry["decision"] == "retag" and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise ReviewFileError(f"{path}: image {image_id!r}: a retag needs its tags as a list of class names.")


def read_review(output_dir: str | os.PathLike) -> dict[str, dict]:
    """
    The decisions of `OUTPUT_DIR/review.json`: `{image id: {"decision", "time", ["tags"]}}`; `{}` when there is no
    such file.

    Raises:
        ReviewFileError: the file is not valid JSON or not of this format (the message names the file).
    """
    path = review_path(output_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ReviewFileError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(document, dict) or document.get("format") != REVIEW_FORMAT:
        raise ReviewFileError(f'{path}: not a review file (expected "format": "{REVIEW_FORMAT}").')
    if document.get("version") != REVIEW_VERSION:
        raise ReviewFileError(f"{path}: version {document.get('version')!r}; this package reads {REVIEW_VERSION}.")
    decisions = document.get("decisions")
    if not isinstance(decisions, dict):
        raise ReviewFileError(f'{path}: "decisions" must be an object keyed by image id.')
    for image_id, entry in decisions.items():
        _check_decision(path, image_id, entry)
    return decisions


def rejected_ids(output_dir: str | os.PathLike) -> set[str]:
    """The ids of the images rejected in `OUTPUT_DIR/review.json` (an empty set without the file)."""
    return {image_id for image_id, entry in read_review(output_dir).items() if entry["decision"] == "reject"}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_review(output_dir: str | os.PathLike, decisions: dict[str, dict]) -> Path:
    """Writes `decisions` as `OUTPUT_DIR/review.json`, atomically (the caller holds the directory)."""
    document = {"format": REVIEW_FORMAT, "version": REVIEW_VERSION, "decisions": dict(sorted(decisions.items()))}
    path = review_path(output_dir)
    atomic_write_text(path, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return path


def record_decision(output_dir: str | os.PathLike, image_id: str, decision: str, tags=None) -> dict:
    """
    Records one decision in `OUTPUT_DIR/review.json` under the directory's lock, keeping the others; returns its
    entry. `tags` (class names) go with "retag" only.

    Raises:
        ValueError: an unknown decision, or a retag without tags.
        ReviewFileError: the existing file is malformed (it is left as it is).
        OutputDirInUse: a run holds the directory.
    """
    if decision not in DECISIONS:
        raise ValueError(f"Unknown decision {decision!r}; one of {', '.join(DECISIONS)}.")
    entry = {"decision": decision, "time": utc_now()}
    if decision == "retag":
        if not tags:
            raise ValueError("A retag needs at least one tag.")
        entry["tags"] = [str(tag) for tag in tags]
    with _WRITE_LOCK, hold_output_dir(output_dir):
        decisions = read_review(output_dir)
        decisions[str(image_id)] = entry
        write_review(output_dir, decisions)
    return entry


__all__ = [
    "DECISIONS",
    "REVIEW_FILE",
    "ReviewFileError",
    "read_review",
    "record_decision",
    "rejected_ids",
    "write_review",
]
