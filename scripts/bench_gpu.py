#!/usr/bin/env python
"""The one-call device benchmark (`make bench-gpu`); see `cpfcte_hf/benchmarks/gpu.py` for what it measures.

python scripts/bench_gpu.py --device cuda --output outputs/bench/gpu.json
python scripts/bench_gpu.py --smoke --output /tmp/gpu_smoke.json     # same code paths, CPU, seconds
"""

import os
import sys


# Run as a file, Python puts this folder first on the import path, where `evaluate.py` and `demo.py` would shadow the
# libraries of those names (the `evaluate` metric library among them): the package is imported from its install.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from cpfcte_hf.benchmarks.gpu import main


if __name__ == "__main__":
    sys.exit(main())
