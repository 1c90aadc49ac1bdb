#!/usr/bin/env python
"""Train CPF-CTE (stage 1): the same as `cpfcte-hf train` (see `cpfcte_hf/cli/commands/train.py`).

accelerate launch scripts/train.py --config voc
accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config shapes --use_cpu true
"""

import sys

from cpfcte_hf.cli.commands.train import main


if __name__ == "__main__":
    sys.exit(main())
