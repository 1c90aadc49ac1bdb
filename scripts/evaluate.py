#!/usr/bin/env python
"""The same as `cpfcte-hf evaluate` (see `cpfcte_hf/cli/commands/evaluate.py` for the options)."""

import sys

from cpfcte_hf.cli.commands.evaluate import main


if __name__ == "__main__":
    sys.exit(main())
