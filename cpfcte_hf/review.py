# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A person's decisions about a labelled output's masks: `OUTPUT_DIR/review.json`.

```
{"format": "cpfcte-hf-review", "version": 1,
 "decisions": {"<image id, as in the output's masks, without extension>":
     {"decision": "accept" | "reject" | "retag", "tags": [class names, only for retag], "time": "<ISO 8601 UTC>"}}}
```

`read_review(output_dir)` returns the decisions (`{}` when there is no file); `rejected_ids(output_dir)` the ids whose
masks were rejected (the export leaves them out). A file that is not of this format is a `ValueError` naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


REVIEW_FILE = "review.json"
REVIEW_FORMAT = "cpfcte-hf-review"
REVIEW_VERSION = 1
DECISIONS = ("accept", "reject", "retag")


def read_review(output_dir: str | os.PathLike) -> dict:
    """
    `{image id: {"decision", "tags"?, "time"}}` of `output_dir/review.json`; `{}` when the file is absent.

    Raises:
        ValueError: the file is not valid JSON, not of the format above, or a decision is malformed (the message
            names the file and the entry).
    """
    path = Path(output_dir) / REVIEW_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable review file ({error}).") from None
    if not isinstance(record, dict) or record.get("format") != REVIEW_FORMAT:
        raise ValueError(f'{path}: not a review file (expected "format": "{REVIEW_FORMAT}").')
    if record.get("version") != REVIEW_VERSION:
        raise ValueError(
            f"{path}: review format version {record.get('version')!r}, this version reads {REVIEW_VERSION}."
        )
    decisions = record.get("decisions")
    if not isinstance(decisions, dict):
        raise ValueError(f'{path}: "decisions" must be a mapping of image id to decision.')
    for image_id, entry in decisions.items():
        if not isinstance(entry, dict) or entry.get("decision") not in DECISIONS:
            raise ValueError(f"{path}: decision of {image_id!r} must be one of {', '.join(DECISIONS)}; got {entry!r}.")
        if entry["decision"] == "retag" and not isinstance(entry.get("tags"), list):
            raise ValueError(f'{path}: the retag decision of {image_id!r} needs a list of "tags".')
    return decisions


def rejected_ids(output_dir: str | os.PathLike) -> set[str]:
    """The ids whose masks a reviewer rejected in `output_dir/review.json` (an absent file: none)."""
    return {image_id for image_id, entry in read_review(output_dir).items() if entry["decision"] == "reject"}


__all__ = ["REVIEW_FILE", "REVIEW_FORMAT", "read_review", "rejected_ids"]
