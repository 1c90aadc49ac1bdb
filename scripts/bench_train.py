#!/usr/bin/env python
"""The same as `cpfcte-hf bench train` (see `cpfcte_hf/commands/bench_train.py` for the options)."""

import sys

from cpfcte_hf.commands.bench_train import main


if __name__ == "__main__":
    sys.exit(main())
