#!/usr/bin/env python
r"""The paper's tables as one command: trains what each table needs, reusing finished runs, and writes
OUTPUT/tables.md and OUTPUT/tables.json (our numbers, mean ± std over seeds, beside the paper's).

    python scripts/reproduce.py --dataset voc --data_root data/VOCdevkit/VOC2012 --tables 1 2 4 5 --seeds 3
    python scripts/reproduce.py --dataset shapes --data_root data/shapes --tables 4 5 --seeds 3

A rerun with the same settings reuses every finished step; a killed run resumes. See cpfcte_hf/workflows/reproduce.py.
"""

import os
import sys


# Run as a file, Python puts this folder first on the import path, where `evaluate.py` and `demo.py` would shadow the
# libraries of those names (the `evaluate` metric library among them): the package is imported from its install.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from cpfcte_hf.workflows.reproduce import main


if __name__ == "__main__":
    sys.exit(main())
