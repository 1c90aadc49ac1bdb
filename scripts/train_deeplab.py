#!/usr/bin/env python
"""Stage 2: train DeepLab-v2 on CPF-CTE pseudo-labels, then evaluate it: the same as `cpfcte-hf train-deeplab`.

    python scripts/train_deeplab.py --config deeplab_voc --data_root data/VOCdevkit/VOC2012 \
        --pseudo_labels pseudo/voc_train_aug --output_dir runs/deeplab_voc
    accelerate launch --num_processes 2 scripts/train_deeplab.py --config ...      # DDP, same flags

See `cpfcte_hf/stage2/train.py` for the options.
"""

import os
import sys


# Run as a file, Python puts this folder first on the import path, where `evaluate.py` and `demo.py` would shadow the
# libraries of those names (the `evaluate` metric library among them): the package is imported from its install.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from cpfcte_hf.cli.commands.train_deeplab import main


if __name__ == "__main__":
    sys.exit(main())
