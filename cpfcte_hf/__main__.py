# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`python -m cpfcte_hf <command> ...`, the same as the `cpfcte-hf` console command (and what
`accelerate launch -m cpfcte_hf train ...` runs on every process)."""

import sys

from .cli.main import main


if __name__ == "__main__":
    sys.exit(main())
