# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The inference core both stages compose (`core`: class probability maps, multi-scale fusion, mask sizes), the
dense CRF and its worker pool (`crf`), and the two pipelines built on them (`pipelines`).
"""

from .._compat import moved_attribute


def __getattr__(name):
    # Names of the 0.1.0 module `cpfcte_hf.inference` (now in its submodules): still found, with a DeprecationWarning.
    return moved_attribute(__name__, name)
