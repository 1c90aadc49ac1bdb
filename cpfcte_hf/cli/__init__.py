# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The command line: one dispatcher (`main`), the shared options and presets (`options`), and the commands
(`commands/`), which parse, check and call.
"""

from .._compat import moved_attribute


def __getattr__(name):
    # Names of the 0.1.0 module `cpfcte_hf.cli` (now in its submodules): still found, with a DeprecationWarning.
    return moved_attribute(__name__, name)
