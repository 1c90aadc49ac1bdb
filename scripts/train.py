#!/usr/bin/env python
"""Train CPF-CTE (stage 1) from image-level labels.

    accelerate launch scripts/train.py --config scripts/configs/voc.yaml
    accelerate launch scripts/train.py --config scripts/configs/shapes.yaml --num_train_epochs 3
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config scripts/configs/coco.yaml

Every field of ModelArguments, DataArguments and CPFCTETrainingArguments (which extends transformers'
TrainingArguments) is an option; a `--config` YAML preset gives defaults and the command line wins.
`--resume_from_checkpoint last` continues the newest checkpoint in --output_dir.
"""

import sys

from cpfcte_hf.cli import parse_args_with_presets
from cpfcte_hf.trainer import CPFCTETrainingArguments
from cpfcte_hf.training import DataArguments, ModelArguments, run_training


def main(argv=None) -> int:
    model_args, data_args, training_args = parse_args_with_presets(
        (ModelArguments, DataArguments, CPFCTETrainingArguments), argv, description=__doc__
    )
    try:
        run_training(model_args, data_args, training_args)
    except (OSError, ValueError) as error:  # bad arguments or data: a clear message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # the loss stopped being finite
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
