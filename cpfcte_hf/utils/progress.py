# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The progress bar of the per-image jobs (prediction, evaluation, report page, export)."""

from __future__ import annotations


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """The tqdm bar of per-image jobs (shown on the main process only: pass `enabled=False` elsewhere)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="img", dynamic_ncols=True)
