#!/usr/bin/env python
"""The whole method on the built-in procedural data, on a CPU: the same as `cpfcte-hf demo` (what `make demo` runs).

See `cpfcte_hf/cli/commands/demo.py`.
"""

import sys

from cpfcte_hf.cli.commands.demo import main


if __name__ == "__main__":
    sys.exit(main())
