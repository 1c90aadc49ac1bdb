# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What a pseudo-labelling run settles before its model's weights are loaded and before it writes a mask: the split
checked against the model's config (`check_split`), the inference size, the fingerprint of everything that
determines the masks, and the output directory's resume or refusal (`prepare_resume`)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence

from ..data import check_single_split
from ..evaluation.html_report import report_files
from ..models.cpfcte.class_names import dataset_class_names, map_class_names, mapping_is_identity, names_of
from ..models.cpfcte.inference import DEFAULT_INFERENCE_SIZE
from ..utils.fingerprint import weights_digest
from .config import PseudoLabelConfig
from .job import prepare_job_dir, require_columns
from .outputs import OutputLayout, SplitCheck


logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- inputs


def check_mask_paths(ids: Sequence[str]) -> None:
    """Refuses, before anything is written, two ids whose masks would be the same file (`a/b` and `A/b` on a
    case-insensitive file system count as the same), naming both."""
    seen: dict[str, str] = {}
    for image_id in ids:
        key = os.path.normcase(str(image_id)).casefold()
        if key in seen:
            raise ValueError(
                f"Images {seen[key]!r} and {image_id!r} would write the same mask file ({image_id}.png on a "
                "case-insensitive file system); rename one of them."
            )
        seen[key] = str(image_id)


# ------------------------------------------------------------------------------ resume, fingerprint, memory


def resolve_inference_size(size: int | None, model_config) -> int:
    """`size` if given, else the checkpoint's `config.inference_size`, else (older checkpoints) 960 with a log line."""
    if size is not None:
        return int(size)
    recorded = getattr(model_config, "inference_size", None)
    if recorded:
        return int(recorded)
    logger.warning(
        f"The checkpoint records no `inference_size` (saved before the field existed): inference at "
        f"{DEFAULT_INFERENCE_SIZE} px. Pass --size to choose (about 2x the training resolution works well)."
    )
    return DEFAULT_INFERENCE_SIZE


def pseudo_label_fingerprint(
    model, config: PseudoLabelConfig, size: int, class_names, use_labels, mean, std, class_mapping=None
) -> dict:
    """
    Everything that determines the masks of a run (`cpfcte_hf.utils.fingerprint`): the model's weights (digest of the
    tensors) and classes, the dataset's class names and their mapping onto the model's, the normalisation, the
    inference size/scales/flip, label masking, the CRF and its parameters, and `crf_max_side`. Worker counts,
    batch size and progress do not change a mask and are left out.
    """
    return {
        "kind": "cpfcte_hf pseudo-labels",
        "model_weights": weights_digest(model),
        "id2label": {str(i): str(name) for i, name in sorted(model.config.id2label.items())},
        "dataset_class_names": [str(name) for name in class_names],
        "class_mapping": None if class_mapping is None else [int(i) for i in class_mapping],
        "image_mean": [float(v) for v in mean],
        "image_std": [float(v) for v in std],
        "size": int(size),
        "scales": [float(s) for s in config.scales],
        "flip": bool(config.flip),
        "use_image_labels": bool(use_labels),
        "crf": config.crf_config.to_dict() if config.crf else None,
        "crf_max_side": int(config.crf_max_side or 0),
        # Only when not the default, so that pseudo-labels made before the option existed keep their fingerprint.
        **(
            {"crf_upsampling": config.crf_upsampling}
            if config.crf and config.crf_upsampling != "align_corners"
            else {}
        ),
    }


def prepare_resume(layout: OutputLayout, fingerprint: dict, overwrite: bool, state=None) -> str:
    """
    Start of a run in `layout.root`: refuses a directory made with other settings (naming what changed), clears
    it with `overwrite`, records the fingerprint, removes temporary files left by a killed run and the summary of
    the previous run (the new one is written at the end and describes only masks this run made or verified).
    Images whose bytes or tags changed since their masks were made are found by the job (`sources.json`,
    `cpfcte_hf.prediction.job.sort_out_shard`).

    Returns:
        "new", "same" (resume) or "overwrite".

    Raises:
        FingerprintMismatch (a ValueError): other settings, or masks without a record, and no `overwrite`.
    """

    def before_record() -> None:
        layout.summary_path.unlink(missing_ok=True)
        layout.report_html.unlink(missing_ok=True)  # like the summary: rewritten at the end, for this run
        (layout.root / "image_labels.json").unlink(missing_ok=True)  # the per-image tags of older versions
        for folder in (layout.bpm_dir, layout.crf_dir) if fingerprint["crf"] else (layout.bpm_dir,):
            folder.mkdir(parents=True, exist_ok=True)

    return prepare_job_dir(
        layout.root,
        fingerprint,
        overwrite,
        (layout.bpm_dir, layout.crf_dir),
        state,
        clear=(layout.report_dir, layout.image_scores, *report_files(layout.root)),
        before_record=before_record,
    )


def _image_labels(dataset, class_mapping, ids, use_labels) -> dict[str, list[int]] | None:
    """`{id: sorted model class ids}` that label masking restricts each image to (`None` without masking; dataset
    class i is model class `class_mapping[i]`, the same id when `None`); rows with unusable labels are left out
    (they fail later, with their reason)."""
    if not use_labels:
        return None
    result = {}
    for image_id, labels in zip(ids, dataset["labels"]):
        try:
            result[image_id] = sorted(
                {0, *(int(c if class_mapping is None else class_mapping[int(c)]) for c in labels or [])}
            )
        except (IndexError, TypeError, ValueError):
            continue
    return result


def check_split(dataset, model_config, class_names: Sequence[str] | None = None, use_image_labels: bool = True):
    """
    Everything about a split that can be checked with the model's config alone (before its weights are loaded and
    before anything is written): one split, `image` and `id` columns, unique ids that are usable file names and
    distinct on a case-insensitive file system, and the dataset's classes mapped onto the model's by name (a
    class the model lacks is a `ValueError` saying what to do). Returns a `SplitCheck`.
    """
    check_single_split(dataset)
    dataset_names = (
        list(class_names) if class_names is not None else dataset_class_names(dataset, model_config.id2label)
    )
    # Class identity is by name: dataset class i is model class class_mapping[i] (refused if the model lacks it).
    class_mapping = map_class_names(dataset_names, names_of(model_config), source="the dataset")
    if not mapping_is_identity(class_mapping) or len(dataset_names) != model_config.num_labels:
        logger.info(f"Dataset classes mapped onto the model's by name: {dict(zip(dataset_names, class_mapping))}.")
    require_columns(dataset, ("image", "id"))
    use_labels = use_image_labels and "labels" in dataset.column_names
    ids = [str(i) for i in dataset.select_columns(["id"])[:]["id"]]  # one read, not one per row
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise ValueError(f"Image ids must be unique (they are file names); repeated: {sorted(duplicates)[:10]}.")
    check_mask_paths(ids)
    return SplitCheck(dataset_names, class_mapping, ids, use_labels)
