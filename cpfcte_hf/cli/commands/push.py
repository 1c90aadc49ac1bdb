# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""Share a trained CPF-CTE checkpoint on the Hugging Face Hub: weights, config with `auto_map`, image processor,
the model's source files (for `trust_remote_code=True`), results files, and a model card filled from them.

    cpfcte-hf push --model runs/cpf-cte-voc --repo_id USER/cpf-cte-voc \
        --results pseudo/voc_train_aug runs/deeplab_voc                       # push (needs `hf auth login`)
    cpfcte-hf push --model runs/cpf-cte-voc --repo_id USER/cpf-cte-voc --dry_run hub/cpf-cte-voc

--results takes output directories or files of the other commands: `label` (report/metrics.json), `evaluate`
(metrics.json), `train-deeplab` (predictions/<split>/report/metrics.json) and `train` (eval_results.json; the --model
directory's own is always read). A value that no results file gives is "not measured" on the card. --dry_run
writes the folder that would be uploaded instead of pushing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...utils.arguments import RepeatableList, parse_args_with_presets, print_error, require


@dataclass
class PushArguments:
    model: str | None = field(default=None, metadata={"help": "Trained checkpoint directory (required)."})
    repo_id: str | None = field(default=None, metadata={"help": "USER/NAME (or ORG/NAME) on the Hub (required)."})
    card: str = field(default="auto", metadata={"help": "auto, a card name (voc, coco) or a template path."})
    results: list[str] = field(
        default_factory=list,
        metadata={"help": "Results files or output directories (repeatable).", "action": RepeatableList},
    )
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    dry_run: str | None = field(default=None, metadata={"help": "Write the Hub folder to this directory, no push."})
    overwrite: bool = field(default=False, metadata={"help": "--dry_run: replace a folder this command wrote."})
    commit_message: str | None = None
    space_requirement: str | None = field(
        default=None,
        metadata={"help": "The Space's requirements.txt line for this package (default cpfcte-hf[app]==VERSION)."},
    )


def parse_arguments(argv=None, light: bool = False, early_check=None):
    """`push`'s options; `early_check` (the command's own start: `hub.checks.early_check`) runs before transformers is
    imported (`light`: the options built without it, see `parse_args_with_presets`)."""
    return parse_args_with_presets(
        (PushArguments,),
        argv,
        description=__doc__,
        command="push",
        prog="cpfcte-hf push",
        light=light,
        early_check=early_check,
    )


def main(argv=None) -> int:
    from ...hub.checks import early_check

    try:  # the checkpoint and the repo id: before transformers is imported
        (args,) = parse_arguments(argv, early_check=early_check)
    except (OSError, ValueError) as error:
        print_error(error)
        return 2
    require(args, "model", "repo_id")
    from ...hub.folder import build_hub_folder, format_hub_folder, push_to_hub
    from ...hub.measurements import HubPushError, HubSharingError

    try:
        if args.dry_run:
            folder = build_hub_folder(
                args.model, args.dry_run, args.repo_id, card=args.card, results=args.results, overwrite=args.overwrite,
                space_requirement=args.space_requirement,
            )  # fmt: skip
            print(format_hub_folder(folder))
            print(f"Dry run: nothing pushed. Upload later with `hf upload {args.repo_id} {args.dry_run}`.")
        else:
            folder, url = push_to_hub(
                args.model,
                args.repo_id,
                card=args.card,
                results=args.results,
                private=args.private,
                commit_message=args.commit_message,
                space_requirement=args.space_requirement,
            )
            print(format_hub_folder(folder))
            print(f"Pushed: {url}")
    except HubPushError as error:
        print_error(error)
        return 3
    except (HubSharingError, OSError, ValueError) as error:  # bad inputs: a clear message, not a traceback
        print_error(error)
        return 2
    return 0
