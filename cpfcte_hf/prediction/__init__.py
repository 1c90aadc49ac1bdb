# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The prediction job both stages run: sharding, CRF, accounting (`job`), output layout, fingerprint and
resume, and stage 1's pseudo-labelling (`pseudo_labels`).
"""

from .._compat import moved_attribute


def __getattr__(name):
    # Names of the 0.1.0 module `cpfcte_hf.prediction` (now in its submodules): still found, with a DeprecationWarning.
    return moved_attribute(__name__, name)
