# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Atomic file writes, the package's one import point for them: a file is written next to its target under a
temporary name and renamed over it, so that a reader (or a resumed run) never sees half a file; permissions follow
the umask as for a plain `open`.

The implementation lives in `models/cpfcte/visualization.py` because that file is part of the pipeline's remote code
(a saved pipeline carries it, and it imports only its sibling files); every other module imports them from here.
"""

from ..models.cpfcte.visualization import atomic_write_bytes, atomic_write_text


__all__ = ["atomic_write_bytes", "atomic_write_text"]
