# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Sharing on the Hugging Face Hub: the Hub folder, its model card and the push (`folder`)."""

from .._compat import moved_attribute


def __getattr__(name):
    # Names of the 0.1.0 module `cpfcte_hf.hub` (now in its submodules): still found, with a DeprecationWarning.
    return moved_attribute(__name__, name)
