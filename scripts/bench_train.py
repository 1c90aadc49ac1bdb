#!/usr/bin/env python
"""The same as `cpfcte-hf bench train` (see `cpfcte_hf/benchmarks/train.py` for the options)."""

import sys

from cpfcte_hf.benchmarks.train import main


if __name__ == "__main__":
    sys.exit(main())
