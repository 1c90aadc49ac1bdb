# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""Export a labelled output's masks as a `datasets` dataset, COCO JSON and/or Label Studio tasks, with a count of what
was left out.

    cpfcte-hf export --labels outputs/demo/pseudo_labels --format datasets coco --output_dir exports/demo_train
    cpfcte-hf export --labels pseudo/voc_train_aug --format datasets --output_dir exports/voc \
        --push_to_hub USER/voc-pseudo-labels                          # needs `hf auth login`
    cpfcte-hf export --labels pseudo/voc_train_aug --output_dir exports/voc --dry_run hub/voc-pseudo-labels
    cpfcte-hf export --labels outputs/demo/pseudo_labels --format labelstudio --output_dir exports/demo_label_studio

--labels takes one or more labelled output folders, one split each: a `cpfcte-hf label` folder (its CRF masks by
default, --mask_set bpm for the others) or a stage-2 `predictions/<split>/` folder (MS+CRF by default). The split
is loaded again from what the run recorded in its summary.json (dataset, data root, split); --dataset, --data_root,
--split and --dataset_option override it. Only images whose masks are complete and current are exported: failed,
skipped, without a mask, changed since their mask was made, or rejected in the folder's review.json, they are left
out and counted (printed, and in OUTPUT_DIR/export_summary.json and the dataset card).

--format datasets: `DatasetDict.save_to_disk(OUTPUT_DIR)` (`datasets.load_from_disk(OUTPUT_DIR)`), columns image,
label (the mask PNG), id, classes, with OUTPUT_DIR/id2label.json and a dataset card, OUTPUT_DIR/README.md.
--format coco: OUTPUT_DIR/<split>.json (one RLE annotation per class present per image; background and 255 = ignore
are not annotated) and the images in OUTPUT_DIR/images/<split>/.
--format labelstudio: OUTPUT_DIR/labelstudio/<split>.json, Label Studio tasks with one brush pre-annotation per class
present per image, OUTPUT_DIR/labelstudio/config.xml (the labelling interface to paste into the project) and the
images in OUTPUT_DIR/images/<split>/, addressed by --image_url (default: Label Studio's local files, served from
OUTPUT_DIR). --push_to_hub REPO uploads the Hub dataset folder
(parquet shards, card, id2label.json); --dry_run DIR writes that folder instead (`datasets.load_dataset(DIR)`).

Everything is written to a temporary folder and renamed into place. Exit status: 0 exported; 2 bad arguments or
input (not a labelled output, records that disagree, a mask value beyond the classes, an output folder in the way:
one line naming the file, nothing written); 3 the push failed (the export on disk is complete).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...data.arguments import DataSourceArguments
from ...utils.arguments import parse_args_with_presets, print_error, require


# The export formats as options (`--format`, run's `--export`) take them: `cpfcte_hf.export.FORMATS`, written here
# too so that the front door checks them without importing the exporters (a test holds the two equal).
EXPORT_FORMATS = ("datasets", "coco", "labelstudio")


@dataclass
class ExportArguments(DataSourceArguments):
    """What to export, in which formats, and where to; the data source (`--dataset`, `--data_root`, `--split`, the
    loader options) defaults to the one the labelling run recorded."""

    labels: list[str] = field(
        default_factory=list,
        metadata={"help": "Labelled output folders (required): `label` output, or stage-2 predictions/<split>/."},
    )
    format: list[str] = field(
        default_factory=lambda: ["datasets"],
        metadata={"help": f"{', '.join(EXPORT_FORMATS[:-1])} and/or {EXPORT_FORMATS[-1]}.", "choices": EXPORT_FORMATS},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the export (required); alias --out.", "aliases": ["--out"]}
    )
    mask_set: str | None = field(
        default=None, metadata={"help": "The masks to export: crf or bpm (stage 1), ms_crf or ms (stage 2)."}
    )
    split: str | None = field(default=None, metadata={"help": "Split name (default: the one recorded)."})
    push_to_hub: str | None = field(default=None, metadata={"help": "USER/NAME of a Hub dataset repo to push to."})
    dry_run: str | None = field(default=None, metadata={"help": "Write the Hub dataset folder here, no push."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    image_url: str | None = field(
        default=None,
        metadata={
            "help": "Label Studio tasks: the images' URL, a template with {file_name} and {split} (default: "
            "/data/local-files/?d=images/{split}/{file_name}, Label Studio serving the export folder)."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an export this command wrote."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no_progress: off)."})


def parse_arguments(argv=None):
    return parse_args_with_presets(
        (ExportArguments,), argv, description=__doc__, command="export", prog="cpfcte-hf export"
    )


def main(argv=None) -> int:
    (args,) = parse_arguments(argv)  # help, misspelt options and bad values: before the exporters are imported
    require(args, "labels", "output_dir")
    from ...export import ExportError, export_labels, format_record
    from ...hub.measurements import HubPushError

    try:
        result = export_labels(
            args.labels,
            args.output_dir,
            args.format,
            mask_set=args.mask_set,
            dataset=args.dataset,
            data_root=args.data_root,
            split=args.split,
            dataset_options=args.loader_options(),
            push_to_hub=args.push_to_hub,
            dry_run=args.dry_run,
            private=args.private,
            overwrite=args.overwrite,
            progress=args.progress,
            image_url=args.image_url,
        )
    except HubPushError as error:  # the export on disk is complete; the push is what failed
        print_error(error)
        return 3
    except (ExportError, OSError, ValueError) as error:  # bad input: one line, nothing written
        print_error(error)
        return 2
    print(format_record(result.record, result.output_dir))
    if result.dry_run is not None:
        print(f"Hub dataset folder in {result.dry_run}: {', '.join(result.hub_files)}.")
        print("Dry run: nothing pushed. Upload later with `hf upload --repo-type dataset USER/NAME DIR`.")
    if result.commit_url:
        print(f"Pushed: {result.commit_url}")
    return 0
