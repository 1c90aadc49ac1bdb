# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2: train DeepLab-v2 (ResNet-101, output stride 8, ASPP) on CPF-CTE pseudo-labels, then evaluate it.

    cpfcte-hf train-deeplab --config deeplab_voc --data_root data/VOCdevkit/VOC2012 \
        --pseudo_labels pseudo/voc_train_aug --output_dir runs/deeplab_voc
    accelerate launch --num_processes 2 -m cpfcte_hf train-deeplab --config ...     # DDP; same flags
    cpfcte-hf train-deeplab --config ... --resume_from_checkpoint last              # resume a stopped run
    cpfcte-hf train-deeplab --config ... --do_train false --model_name_or_path runs/deeplab_voc   # eval only

--pseudo_labels is the output directory of `cpfcte-hf label` (its crf/<id>.png masks are the targets). The model
(pipeline-ready) goes to --output_dir, the evaluation to --output_dir/predictions/<split>/ (ms/, ms_crf/, report/).
The options are those of `cpfcte_hf.stage2.arguments` (`--help`), then Trainer's (`--help_all`).
"""

from ...stage2.arguments import parse_arguments
from ...stage2.checks import early_check
from ...utils.arguments import print_error
from ...utils.openmp import set_openmp_wait


def main(argv=None, prog: str = "cpfcte-hf train-deeplab") -> int:
    set_openmp_wait(training=True)  # before anything loads torch
    try:  # help, misspelt options, the data, pseudo-labels and model location: before transformers is imported
        arguments = parse_arguments(argv, prog=prog, early_check=early_check)
    except (OSError, ValueError) as error:
        print_error(error)
        return 2
    from ...stage2.train import run_parsed

    return run_parsed(*arguments)


__all__ = ["main", "parse_arguments"]
