#!/usr/bin/env python
"""The same as `cpfcte-hf bench crf_memory` (see `cpfcte_hf/benchmarks/crf_memory.py` for the options)."""

import sys

from cpfcte_hf.benchmarks.crf_memory import main


if __name__ == "__main__":
    sys.exit(main())
