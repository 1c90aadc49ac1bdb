# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What may be published: every text and value written into a Hub folder goes through `public_text` /
`public_value`, which turn an absolute local path into `…/<last component>`, so that no file of the folder holds the
machine's paths.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path


# An absolute path of the machine that wrote a record: POSIX (not part of a URL or of a relative path) or Windows.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~…-])(?:/|[A-Za-z]:[\\/])[^\s\"'<>|,;:]+")


LOCAL_PATH_PREFIX = "…/"  # markdown-safe (no HTML tag), read as "a path shortened"


def _shorten(match: re.Match) -> str:
    parts = [part for part in re.split(r"[\\/]", match.group(0)) if part]
    return LOCAL_PATH_PREFIX + (parts[-1] if parts else "")


def public_text(text: str) -> str:
    """`text` with every absolute local path replaced by `…/<its last component>`: what the Hub folder may say of
    the machine that made a run (the data folder's name, not the user's directories)."""
    return _ABSOLUTE_PATH.sub(_shorten, text)


def public_value(value):
    """A JSON value (`public_text` on every string, keys included)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, Mapping):
        return {public_text(str(key)): public_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(item) for item in value]
    return value


def _write_public_json(value, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public_value(value), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy_public(source: Path, target: Path) -> None:
    """Copies a results file or companion with its local paths shortened (`public_text`); images as they are."""
    if source.suffix == ".json":
        _write_public_json(json.loads(source.read_text(encoding="utf-8")), target)
    elif source.suffix in (".csv", ".txt", ".md", ".yaml", ".yml"):
        target.write_text(public_text(source.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        shutil.copy2(source, target)
