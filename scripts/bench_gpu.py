#!/usr/bin/env python
"""The one-call device benchmark (`make bench-gpu`); see `cpfcte_hf/benchmarks/gpu.py` for what it measures.

python scripts/bench_gpu.py --device cuda --output outputs/bench/gpu.json
python scripts/bench_gpu.py --smoke --output /tmp/gpu_smoke.json     # same code paths, CPU, seconds
"""

import sys

from cpfcte_hf.benchmarks.gpu import main


if __name__ == "__main__":
    sys.exit(main())
