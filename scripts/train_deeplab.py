#!/usr/bin/env python
r"""Stage 2: train DeepLab-v2 (ResNet-101, output stride 8, ASPP) on CPF-CTE pseudo-labels, then evaluate it.

    python scripts/train_deeplab.py --config scripts/configs/deeplab_voc.yaml \
        --data_root data/VOCdevkit/VOC2012 --pseudo_labels pseudo/voc_train_aug --output_dir runs/deeplab_voc
    accelerate launch --num_processes 2 scripts/train_deeplab.py --config ...   # DDP, same flags
    python scripts/train_deeplab.py --config ... --resume_from_checkpoint last  # resume a stopped run
    python scripts/train_deeplab.py --config ... --do_train false --model_name_or_path runs/deeplab_voc  # eval only

--pseudo_labels is the output directory of scripts/pseudo_label.py (its crf/<id>.png masks are the targets).
Recipe defaults (SPEC section 4): crop 321, random scale 0.5-1.5, flip, batch 10, 20k steps, SGD lr 2.5e-4
(10x on the classifier), momentum 0.9, weight decay 5e-4, poly 0.9; test at scales 1.0 0.75 0.5 fused by max,
then the dense CRF. The model (pipeline-ready) goes to --output_dir, the evaluation to
--output_dir/predictions/<split>/ (ms/, ms_crf/, report/). Any option may come from the YAML preset; the command
line wins. See cpfcte_hf/deeplab/run.py for the options.
"""

import sys

from cpfcte_hf.deeplab.run import main


if __name__ == "__main__":
    sys.exit(main())
