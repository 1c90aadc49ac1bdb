# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 2 with any transformers semantic-segmentation model: train it on the pseudo-labels, then evaluate it.

    cpfcte-hf train-segmenter --config segformer_voc --data_root data/VOCdevkit/VOC2012 \
        --pseudo_labels pseudo/voc_train_aug --output_dir runs/segformer_voc          # MiT-B1 from the Hub
    cpfcte-hf train-segmenter --config deeplab_shapes --model_type segformer \
        --config_overrides "depths=[1,1,1,1],hidden_sizes=[16,32,64,128],decoder_hidden_size=64" \
        --pseudo_labels outputs/demo/pseudo_labels --output_dir runs/segformer_tiny   # random init, from a config
    accelerate launch --num_processes 2 -m cpfcte_hf train-segmenter --config ...    # DDP; same flags

`--model_type` is deeplab_v2 (the default: `train-deeplab` is this same command) or any
`AutoModelForSemanticSegmentation` type (segformer, upernet, dpt, ...); `--model_name_or_path` starts from a
checkpoint or an encoder (a Hub id or a folder; e.g. nvidia/mit-b1, whose decode head is made for the dataset's
classes). The data, augmentation, trainer, prediction job and multi-scale + CRF evaluation are stage 2's
(`cpfcte_hf.stage2`); the model and its image processor go to --output_dir, ready for
`pipeline("image-segmentation", model=OUTPUT_DIR)`.
"""

from ...stage2.arguments import parse_arguments as _parse_arguments
from .train_deeplab import main as _main


PROG = "cpfcte-hf train-segmenter"


def parse_arguments(argv=None, early_check=None, light: bool = False):
    return _parse_arguments(argv, prog=PROG, early_check=early_check, light=light)


def main(argv=None) -> int:
    return _main(argv, prog=PROG)


__all__ = ["main", "parse_arguments"]
