#!/usr/bin/env python
"""The same as `cpfcte-hf bench train` (see `cpfcte_hf/benchmarks/train.py` for the options)."""

import os
import sys


# Run as a file, Python puts this folder first on the import path, where `evaluate.py` and `demo.py` would shadow the
# libraries of those names (the `evaluate` metric library among them): the package is imported from its install.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from cpfcte_hf.benchmarks.train import main


if __name__ == "__main__":
    sys.exit(main())
