# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Train CPF-CTE (stage 1) from image-level labels.

    cpfcte-hf train --config voc                                   # packaged preset (cpfcte_hf/presets/voc.yaml)
    cpfcte-hf train --config shapes --num_train_epochs 3
    accelerate launch --multi_gpu --num_processes 2 -m cpfcte_hf train --config coco

Every field of ModelArguments, DataArguments and CPFCTETrainingArguments (which extends transformers'
TrainingArguments) is an option; a `--config` preset gives defaults and the command line wins.
`--resume_from_checkpoint last` continues the newest checkpoint in --output_dir.
"""

from ...stage1.arguments import TRAINER_OPTIONS, DataArguments, ModelArguments, check_data_and_model
from ...utils.arguments import parse_args_with_presets, print_error
from ...utils.openmp import set_openmp_wait


# This package's options first; Trainer's (`CPFCTETrainingArguments` = transformers' `TrainingArguments` + the
# recipe's) are imported for the parse, and listed by `--help_all`.
ARGUMENT_TYPES = (ModelArguments, DataArguments, TRAINER_OPTIONS)


def parse_arguments(argv=None, early_check=None, light: bool = False):
    """`train`'s options; `early_check` (the command's own start: `check_data_and_model`) runs before transformers is
    imported. `run` and `reproduce` parse their steps without it and check them themselves (`light`: the options
    built without transformers, see `parse_args_with_presets`)."""
    return parse_args_with_presets(
        ARGUMENT_TYPES,
        argv,
        description=__doc__,
        command="train",
        prog="cpfcte-hf train",
        early_check=early_check,
        light=light,
    )


def main(argv=None) -> int:
    set_openmp_wait(training=True)  # before anything loads torch
    try:
        model_args, data_args, training_args = parse_arguments(argv, early_check=check_data_and_model)
    except (OSError, ValueError) as error:  # the data or the model's location, checked before transformers loads
        print_error(error)
        return 2
    from ...stage1.train import run_training
    from ...utils.distributed import distributed_state, finish_distributed

    try:
        run_training(model_args, data_args, training_args)
    except (OSError, ValueError) as error:  # bad arguments or data: a clear message, not a traceback
        print_error(error)
        return 2
    except FloatingPointError as error:  # the loss stopped being finite
        print_error(error)
        return 3
    # As label and train-deeplab: tear the process group down before the interpreter exits (left to interpreter
    # shutdown, gloo could abort a rank whose peer had already gone: 1 run in 8 of the 2-process test).
    finish_distributed(distributed_state())
    return 0
