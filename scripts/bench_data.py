#!/usr/bin/env python
"""The same as `cpfcte-hf bench data` (see `cpfcte_hf/benchmarks/data.py` for the options)."""

import sys

from cpfcte_hf.benchmarks.data import main


if __name__ == "__main__":
    sys.exit(main())
