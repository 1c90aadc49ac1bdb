#!/usr/bin/env python
"""The same as `cpfcte-hf label` (see `cpfcte_hf/cli/commands/label.py` for the options)."""

import sys

from cpfcte_hf.cli.commands.label import main


if __name__ == "__main__":
    sys.exit(main())
