#!/usr/bin/env python
"""The same as `cpfcte-hf push` (see `cpfcte_hf/cli/commands/push.py` for the options)."""

import sys

from cpfcte_hf.cli.commands.push import main


if __name__ == "__main__":
    sys.exit(main())
