#!/usr/bin/env python
"""The same as `cpfcte-hf bench pseudo_label` (see `cpfcte_hf/benchmarks/pseudo_label.py` for the options)."""

import sys

from cpfcte_hf.benchmarks.pseudo_label import main


if __name__ == "__main__":
    sys.exit(main())
