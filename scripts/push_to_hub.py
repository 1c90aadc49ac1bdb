#!/usr/bin/env python
r"""Share a trained CPF-CTE checkpoint on the Hugging Face Hub: weights, config with `auto_map`, image processor,
the model's source files (for `trust_remote_code=True`), results files, and a model card filled from them.

    python scripts/push_to_hub.py --model runs/cpf-cte-voc --repo-id USER/cpf-cte-voc \
        --results pseudo/voc_train_aug runs/deeplab_voc                       # push (needs `hf auth login`)
    python scripts/push_to_hub.py --model runs/cpf-cte-voc --repo-id USER/cpf-cte-voc --dry-run hub/cpf-cte-voc

--results takes output directories or files of the project's scripts: scripts/pseudo_label.py (report/metrics.json),
scripts/evaluate.py (metrics.json), scripts/train_deeplab.py (predictions/<split>/report/metrics.json), and
scripts/train.py (eval_results.json; the --model directory's own is always read). A value that no results file
gives is "not measured" on the card. --card auto picks model_cards/cpf-cte-<dataset>/README.md from the run's
dataset or the model's classes. --dry-run writes the folder that would be uploaded instead of pushing.
"""

import argparse
import sys

from cpfcte_hf.hub import HubPushError, HubSharingError, build_hub_folder, format_hub_folder, push_to_hub


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained checkpoint directory (scripts/train.py output)")
    parser.add_argument("--repo-id", "--repo_id", required=True, help="USER/NAME (or ORG/NAME) on the Hub")
    parser.add_argument("--card", default="auto", help="auto, voc, coco, or a template path (default: auto)")
    parser.add_argument(
        "--results", nargs="+", action="extend", default=[], metavar="FILE_OR_DIR", help="results sources"
    )
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--dry-run", "--dry_run", metavar="OUT", help="write the Hub folder to OUT, do not push")
    parser.add_argument("--overwrite", action="store_true", help="--dry-run: replace a folder this script wrote")
    parser.add_argument("--commit-message", "--commit_message", help="commit message of the upload")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        if args.dry_run:
            folder = build_hub_folder(
                args.model, args.dry_run, args.repo_id, card=args.card, results=args.results, overwrite=args.overwrite
            )
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
            )
            print(format_hub_folder(folder))
            print(f"Pushed: {url}")
    except HubPushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (HubSharingError, OSError, ValueError) as error:  # bad inputs: a clear message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
