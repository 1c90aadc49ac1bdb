# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""One export: labelled folders -> the formats asked for, written atomically, with `export_summary.json`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..models.cpfcte.visualization import _UMASK
from ..review import rejected_ids
from ..utils.extras import missing_extra
from ..utils.output_dir import create_output_dir
from ..utils.progress import progress_bar
from .records import (
    LEFT_OUT_REASONS,
    ExportError,
    Selection,
    load_labelled_split,
    read_labelled_output,
    scan_masks,
    select_images,
)


FORMATS = ("datasets", "coco", "labelstudio")
SUMMARY_FILE = "export_summary.json"
SUMMARY_FORMAT = "cpfcte-hf-export"


@dataclass
class ExportResult:
    """What an export wrote: the folder, its summary record, and the Hub folder / commit when asked for."""

    output_dir: Path
    record: dict
    hub_files: list[str] = field(default_factory=list)
    dry_run: Path | None = None
    commit_url: str | None = None


def check_output_folder(path: Path, overwrite: bool, option: str) -> None:
    """A folder may be written when it does not exist or is empty, or with `overwrite` when this command wrote it."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"{option} {path}: exists and is not a folder.")
    if not any(path.iterdir()):
        return
    ours = False
    try:
        ours = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8")).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        pass
    if not (overwrite and ours):
        hint = " (--overwrite only replaces a folder this command wrote)." if overwrite else "; or pass --overwrite."
        raise ExportError(f"{option} {path}: exists and is not empty. Choose a new folder{hint}")


def _replace_folder(staging: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def _staging_folder(target: Path, created: list[Path] | None = None) -> Path:
    """A temporary folder next to `target` (renamed onto it when complete); the parents it had to create are
    added to `created` (removed again when the export fails)."""
    try:
        made = create_output_dir(target.parent)
    except OSError as error:
        raise ExportError(str(error)) from None
    if created is not None:
        created.extend(made)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp's 0700 would stay on the folder once renamed into place
    return staging


def summary_record(selections: Sequence[Selection], formats: Sequence[str], seconds: float) -> dict:
    from .. import __version__

    splits = {}
    for selection in selections:
        labelled = selection.labelled
        splits[labelled.split] = {
            "labels": str(labelled.directory),
            "stage": labelled.stage,
            "mask_set": labelled.mask_set,
            "dataset": labelled.dataset,
            "data_root": labelled.data_root,
            "exported": len(selection.images),
            "left_out": len(selection.left_out),
            "left_out_by_reason": selection.counts,
            "left_out_images": selection.left_out,
            **({"coco": f"{labelled.split}.json"} if "coco" in formats else {}),
            **({"labelstudio": f"labelstudio/{labelled.split}.json"} if "labelstudio" in formats else {}),
        }
    return {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "generated_by": f"cpfcte_hf {__version__} (cpfcte-hf export)",
        "formats": list(formats),
        "class_names": selections[0].labelled.class_names,
        "ignore_index": 255,
        "reasons": LEFT_OUT_REASONS,
        "splits": splits,
        "seconds": round(seconds, 3),
    }


def format_record(record: dict, output_dir: Path, show: int = 10) -> str:
    """The printed account of an export: per split, what was exported and what was left out, and why."""
    lines = []
    for split, entry in record["splits"].items():
        counts = ", ".join(f"{n} {LEFT_OUT_REASONS[r]}" for r, n in entry["left_out_by_reason"].items()) or "none"
        lines.append(
            f"{split}: {entry['exported']} image(s) exported ({entry['mask_set']} masks of {entry['labels']}); "
            f"{entry['left_out']} left out: {counts}."
        )
        for item in entry["left_out_images"][:show]:
            detail = f" ({item['detail']})" if item.get("detail") else ""
            lines.append(f"  left out: {item['id']}: {LEFT_OUT_REASONS[item['reason']]}{detail}")
        if entry["left_out"] > show:
            lines.append(f"  ... and {entry['left_out'] - show} more in {output_dir / SUMMARY_FILE}")
    lines.append(f"{', '.join(record['formats'])} export in {output_dir} ({record['seconds']:.1f} s).")
    return "\n".join(lines)


def prepare_selections(
    labels: Sequence[str | os.PathLike],
    mask_set: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
    dataset_options: dict | None = None,
) -> list[Selection]:
    """Reads and checks every labelled folder and sorts its split's images (nothing is written)."""
    if split and len(labels) > 1:
        raise ExportError("--split names the split of one --labels folder; each of several keeps its recorded split.")
    selections: list[Selection] = []
    for path in labels:
        labelled = read_labelled_output(path, mask_set, dataset, data_root, split if len(labels) == 1 else None)
        if selections and labelled.class_names != selections[0].labelled.class_names:
            raise ExportError(
                f"{labelled.directory}: its classes ({', '.join(labelled.class_names)}) differ from those of "
                f"{selections[0].labelled.directory}; one export holds one class list."
            )
        if any(s.labelled.split == labelled.split for s in selections):
            raise ExportError(f"{labelled.directory}: a second folder of split {labelled.split!r}.")
        try:
            rejected = rejected_ids(labelled.directory)
        except ValueError as error:
            raise ExportError(str(error)) from None
        split_data = load_labelled_split(labelled, dataset_options)
        selections.append(select_images(labelled, split_data, rejected))
    return selections


def export_labels(
    labels: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    formats: Sequence[str] = ("datasets",),
    *,
    mask_set: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
    dataset_options: dict | None = None,
    push_to_hub: str | None = None,
    dry_run: str | os.PathLike | None = None,
    private: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    image_url: str | None = None,
) -> ExportResult:
    """
    Exports the complete and current masks of the labelled folders `labels` (one split each) to `output_dir` in
    `formats` (`datasets`: `save_to_disk` + card + `id2label.json`; `coco`: `<split>.json` + `images/<split>/`;
    `labelstudio`: `labelstudio/<split>.json` tasks + `labelstudio/config.xml` + `images/<split>/`, the images at
    the URL template `image_url`), with `export_summary.json`. `push_to_hub`: a dataset repo id, pushed to;
    `dry_run`: the Hub folder is written there instead of pushed. Everything is written to a staging folder next to its target and renamed into place.

    Raises:
        ExportError: bad input (see `records`); nothing is written.
        HubPushError: the push failed (the export in `output_dir` is complete).
    """
    started = time.perf_counter()
    formats = list(dict.fromkeys(formats))
    unknown = [name for name in formats if name not in FORMATS]
    if not formats or unknown:
        raise ExportError(f"--format {' '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    if (push_to_hub or dry_run) and "datasets" not in formats:
        raise ExportError("--push_to_hub and --dry_run share the datasets export: add --format datasets.")
    image_url = _check_labelstudio(formats, image_url)
    if push_to_hub:
        from ..hub.folder import HubSharingError, check_repo_id

        try:
            check_repo_id(push_to_hub)
        except HubSharingError as error:
            raise ExportError(str(error).replace("--repo-id", "--push_to_hub")) from None
    output_dir = Path(output_dir)
    check_output_folder(output_dir, overwrite, "--output_dir")
    if dry_run is not None:
        check_output_folder(Path(dry_run), overwrite, "--dry_run")
    selections = prepare_selections(labels, mask_set, dataset, data_root, split, dataset_options)
    total = sum(len(s.images) for s in selections)
    if total == 0:
        raise ExportError(
            "No image to export: every image was left out ("
            + "; ".join(f"{s.labelled.split}: {s.counts}" for s in selections)
            + ")."
        )
    with _quiet_datasets():  # datasets' own bars ("Saving the dataset", ...) would repeat ours
        return _export(selections, output_dir, formats, push_to_hub, dry_run, private, progress, started, image_url)


def _check_labelstudio(formats, image_url: str | None) -> str | None:
    """The Label Studio image URL template (checked; the default when none is given), before anything is read."""
    if "labelstudio" not in formats:
        if image_url is not None:
            raise ExportError("--image_url is the Label Studio tasks' image address: add --format labelstudio.")
        return None
    missing = missing_extra(formats)
    if missing:
        raise ExportError(missing)
    from .to_labelstudio import DEFAULT_IMAGE_URL, check_image_url

    return check_image_url(image_url) if image_url is not None else DEFAULT_IMAGE_URL


@contextmanager
def _quiet_datasets():
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not disabled:
            enable_progress_bars()


def _export(
    selections, output_dir: Path, formats, push_to_hub, dry_run, private, progress, started, image_url=None
) -> ExportResult:
    from .to_datasets import push_folder

    folders = _Folders(created=[])
    folders.staging = _staging_folder(output_dir, folders.created)
    try:
        _scan_all_masks(selections, progress)
        record = summary_record(selections, formats, 0.0)
        hub_files = []
        if "datasets" in formats:
            hub_files = _write_datasets(selections, folders, output_dir, push_to_hub, dry_run, progress)
        if "coco" in formats:
            from .to_coco import write_coco_split

            _write_splits("coco", write_coco_split, selections, folders.staging, progress)
        if "labelstudio" in formats:
            from .to_labelstudio import write_labelstudio_split

            _write_splits("labelstudio", write_labelstudio_split, selections, folders.staging, progress, image_url)
        record["seconds"] = round(time.perf_counter() - started, 3)
        (folders.staging / SUMMARY_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        result = ExportResult(output_dir, record)
        if folders.hub is not None:
            _finish_hub_folder(folders, record, hub_files, dry_run, result)
        _replace_folder(folders.staging, output_dir)
        if folders.hub is not None:  # the export is complete on disk; a failed push is reported on its own
            result.commit_url = push_folder(folders.hub, push_to_hub, private=private)
    except BaseException:
        shutil.rmtree(folders.staging, ignore_errors=True)
        if not output_dir.exists():
            for folder in reversed(folders.created):  # innermost first; only the folders this export made
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    finally:
        if folders.hub is not None:
            shutil.rmtree(folders.hub, ignore_errors=True)
    return result


@dataclass
class _Folders:
    """The folders an export is writing: the staging folder of the export, the Hub folder's (when one is written),
    and the parent folders it had to create (removed again when the export fails)."""

    created: list[Path]
    staging: Path | None = None
    hub: Path | None = None


def _scan_all_masks(selections: Sequence[Selection], progress: bool) -> None:
    bar = progress_bar(sum(len(s.images) for s in selections), 0, progress, "export: check masks")
    for selection in selections:
        scan_masks(selection, bar)
    bar.close()
    if not any(s.images for s in selections):
        raise ExportError("No image to export: every mask's size differs from its image's.")


def _write_datasets(selections, folders: _Folders, output_dir: Path, push_to_hub, dry_run, progress) -> list[str]:
    """The `datasets` export into the staging folder and, for `--push_to_hub` / `--dry_run`, the Hub folder (into
    `folders.hub`); returns the Hub folder's files."""
    from .to_datasets import build_dataset_dict, write_hub_folder, write_saved_dataset

    work = folders.staging / ".arrow-tmp"
    work.mkdir()
    bar = progress_bar(sum(len(s.images) for s in selections), 0, progress, "export: datasets")
    dataset_dict = build_dataset_dict(selections, work, bar)
    bar.close()
    write_saved_dataset(dataset_dict, selections, folders.staging, output_dir)
    hub_files = []
    if dry_run is not None or push_to_hub:
        # The Hub folder: written to the --dry_run folder, or to a temporary one that is pushed.
        folders.hub = (
            _staging_folder(Path(dry_run), folders.created) if dry_run is not None else Path(tempfile.mkdtemp())
        )
        shown = Path(dry_run) if dry_run is not None else None
        hub_files = write_hub_folder(dataset_dict, selections, folders.hub, push_to_hub, shown)
    del dataset_dict
    shutil.rmtree(work)
    return hub_files


def _write_splits(name: str, write_split, selections, staging: Path, progress, *options) -> None:
    """A per-split format (`coco`, `labelstudio`): `write_split(selection, staging, bar, *options)` for each split,
    under one progress bar."""
    bar = progress_bar(sum(len(s.images) for s in selections), 0, progress, f"export: {name}")
    for selection in selections:
        write_split(selection, staging, bar, *options)
    bar.close()


def _finish_hub_folder(folders: _Folders, record: dict, hub_files: list[str], dry_run, result: ExportResult) -> None:
    """The Hub folder's summary (public values only); a `--dry_run` folder is renamed into place (then nothing is
    left to push)."""
    from ..hub.card import public_value

    (folders.hub / SUMMARY_FILE).write_text(json.dumps(public_value(record), indent=2) + "\n")
    result.hub_files = sorted({*hub_files, SUMMARY_FILE})
    if dry_run is not None:
        _replace_folder(folders.hub, Path(dry_run))
        folders.hub, result.dry_run = None, Path(dry_run)


__all__ = ["FORMATS", "SUMMARY_FILE", "ExportResult", "export_labels", "format_record", "prepare_selections"]
