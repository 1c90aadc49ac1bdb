#!/usr/bin/env python
"""The same as `cpfcte-hf bench deeplab` (see `cpfcte_hf/benchmarks/deeplab.py` for the options)."""

import sys

from cpfcte_hf.benchmarks.deeplab import main


if __name__ == "__main__":
    sys.exit(main())
