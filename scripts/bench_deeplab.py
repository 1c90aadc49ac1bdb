#!/usr/bin/env python
"""The same as `cpfcte-hf bench deeplab` (see `cpfcte_hf/commands/bench_deeplab.py` for the options)."""

import sys

from cpfcte_hf.commands.bench_deeplab import main


if __name__ == "__main__":
    sys.exit(main())
