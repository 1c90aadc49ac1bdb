# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Sharing a trained CPF-CTE checkpoint on the Hugging Face Hub: the Hub folder, its model card, the push.

The Hub folder holds everything a user needs, with or without this package:

```
config.json, model.safetensors        the model, `auto_map` in the config (remote code)
preprocessor_config.json              CPFCTEImageProcessor
configuration_cpfcte.py, modeling_cpfcte.py, image_processing_cpfcte.py     for `trust_remote_code=True`
README.md                             the model card: `model_cards/template.md` rendered with `ModelCard.from_template`
results.json                          every measurement on the card: value, dataset, split, the file it came from
results/<group>/...                   copies of those results files (`results.py` schema) and their plots
training/run_config.json, trainer_state.json      the stage-1 training run as recorded (when it was)
app.py, requirements.txt              a Gradio Space that runs `cpfcte-hf app` on this model (`app.space`)
```

Card rule: a number on the card comes from a results file the project wrote (`results.py`), never from the
template; a value without one is "not measured" and has no `model-index` entry. The card names the dataset and the
classes of the run it describes, from what the run recorded (`run_config.json`, the results files) and the model's
own class names, never from a class count. The paper's numbers and recipe appear only for VOC and COCO, labelled as
the paper's. Every other statement about the run is rendered from its records too (`card_facts`): the inference size
(`config.inference_size`), each pseudo-labelling run's size, scales, flip, tags and CRF (its results file's
`settings`), the stage-1 training as run (`run_config.json`, and `trainer_state.json` for the steps and epochs done),
and each stage-2 model's architecture, training and test scales (its results file's `model_info` and `settings`).
No file of the folder holds an absolute local path: each becomes `…/<last component>` (`public_text`).
What the card says besides the run's records (values, datasets, tags) is in `model_cards/cards.yaml`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.results import ResultsError, read_json
from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig
from .card import (
    DatasetCard,
    _known_datasets,
    describe_dataset,
    render_model_card,
)
from .checks import check_model_dir, check_repo_id  # noqa: F401  (importable from here, as in 0.1.0)
from .measurements import (
    _SPECS,
    CARD_TEMPLATE,
    MEASUREMENTS,
    NOT_MEASURED,
    RESULTS_FILE,
    TRAINING_RECORDS,
    HubPushError,
    HubSharingError,
    Measurement,
    collect_measurements,
)
from .public import (
    _copy_public,
    _write_public_json,
)


# ---------------------------------------------------------------------------------------------------- results


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_same_model(measurement: Measurement, model_path: Path) -> None:
    """A stage-1 result recording a local model directory must be of these weights (stage 2's is another model)."""
    recorded = measurement.results.model
    if measurement.key.startswith("deeplab") or not recorded or not Path(recorded).is_dir():
        return  # stage 2, a Hub id, or a directory that has moved since: nothing to compare with
    mine, theirs = model_path / "model.safetensors", Path(recorded) / "model.safetensors"
    if Path(recorded).resolve() == model_path.resolve() or (
        mine.is_file() and theirs.is_file() and _sha256(mine) == _sha256(theirs)
    ):
        return
    raise HubSharingError(
        f"Results file {measurement.source} was made with the model in {recorded}, whose weights are not those of "
        f"--model {model_path}."
    )


# ------------------------------------------------------------------------------------------------ Hub folder


@dataclass
class HubFolder:
    """A Hub folder: what `plan_hub_folder` read and checked before any weights are loaded, then (`path`, `files`)
    what `build_hub_folder` wrote."""

    model_path: Path
    repo_id: str
    config: CPFCTEConfig
    template: Path
    dataset: DatasetCard
    measurements: dict[str, Measurement]
    notes: list[str]
    run_config: dict | None = None
    trainer_state: dict | None = None
    path: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def card(self) -> str:
        return self.dataset.key

    @property
    def not_measured(self) -> list[str]:
        """The values every card lists that no results file gave."""
        return [key for key in MEASUREMENTS if key not in {m.key for m in self.measurements.values()}]


def plan_hub_folder(
    model_dir: str | os.PathLike, repo_id: str, card: str = "auto", results: Sequence[str | os.PathLike] = ()
) -> HubFolder:
    """
    Checks every input of a Hub folder and reads the results, without loading the model. `repo_id`: `USER/NAME`,
    shown in the card's usage examples. `card`: "auto" (the dataset the run recorded), a name of `available_cards()`
    (must fit the model's classes), or a template's path. `results`: results files or directories
    (`results.find_results`); the model directory's own final evaluation is always read.

    Raises:
        HubSharingError: a bad model directory, card, results source or repo id (the message names it).
    """
    repo_id, template, known = check_repo_id(repo_id), CARD_TEMPLATE, _known_datasets()
    if card not in ("auto", *known):
        if not Path(card).is_file():
            raise HubSharingError(
                f"Unknown model card {card!r}. Available cards: {', '.join(sorted(known))} (or auto, or a "
                "template's path)."
            )
        template, card = Path(card), "auto"
    try:  # an unreadable JSON file (`results.read_json`) is a bad input too
        model_path = check_model_dir(model_dir)
        config = CPFCTEConfig.from_pretrained(model_path)
        class_names = [config.id2label[i] for i in range(config.num_labels)]
        if card in known and tuple(class_names) != known[card].class_names:
            raise HubSharingError(
                f"Model card {card!r} is for {len(known[card].class_names)}-class models; this checkpoint has "
                f"{len(class_names)} classes ({', '.join(class_names[:5])}, ...), not those of {known[card].name}. "
                "Use --card auto (the card of the dataset the run recorded) or a template of your own (--card PATH)."
            )
        # The model directory's own final evaluation (the trainer's), when it has one.
        evaluation = read_json(model_path / "eval_results.json", missing_ok=True) or {}
        own = [model_path] if (model_path / "metrics.json").is_file() or "eval_mean_iou" in evaluation else []
        measurements, notes, read = collect_measurements([*results, *own], class_names)
        run_config = read_json(model_path / "run_config.json", missing_ok=True)
        if run_config is None and "training_eval_miou" in measurements:
            training_dir = measurements["training_eval_miou"].source.parent
            run_config = read_json(training_dir / "run_config.json", missing_ok=True)
        trainer_state = read_json(model_path / "trainer_state.json", missing_ok=True)
    except ResultsError as error:
        raise HubSharingError(str(error)) from error
    data_args = (run_config or {}).get("DataArguments") or {}
    recorded = [(r.dataset, r.data_root) for r in read] + [(data_args.get("dataset"), data_args.get("data_root"))]
    dataset = describe_dataset(class_names, recorded + ([(card, None)] if card in known else []))
    for m in measurements.values():
        _check_same_model(m, model_path)
    return HubFolder(model_path, repo_id, config, template, dataset, measurements, notes, run_config, trainer_state)


def _copy_results(measurements: Mapping[str, Measurement], folder: Path) -> dict[str, str]:
    """Copies each results file (and its companions) under `folder/results/<group>/`, local paths shortened
    (`public_text`); sets `repo_path`. Returns `{plot title: repo path}` of the per-class plots."""
    targets: dict[Path, str] = {}  # results file -> its folder in the repo
    plots = {}
    for m in measurements.values():
        if m.source not in targets:
            base = "deeplab" if _SPECS[m.key]["stage"] == "stage2" else _SPECS[m.key]["stage"]
            group, n = base, 1
            while f"results/{group}" in targets.values():
                n += 1
                group = f"{base}_{n}"
            targets[m.source] = f"results/{group}"
            (folder / targets[m.source]).mkdir(parents=True)
            for file in (m.source, *m.results.companions):
                _copy_public(file, folder / targets[m.source] / file.name)
                if file.name == "per_class_iou.png":
                    plots[f"Per-class IoU: {group.replace('_', ' ')}"] = f"{targets[m.source]}/{file.name}"
        m.repo_path = f"{targets[m.source]}/{m.source.name}"
    return plots


def _results_json(plan: HubFolder, staging: Path, class_names: Sequence[str]) -> dict:
    """The folder's `results.json`: every measurement on the card, the file it was read from and that file's SHA-256
    (of the copy in `staging`), and the values not measured."""
    from .. import __version__

    return {
        "generated_by": f"cpfcte_hf {__version__} (cpfcte_hf.hub.folder)",
        "repo_id": plan.repo_id,
        "dataset": plan.dataset.name,
        "metric": "mean_iou over all classes, background included, one confusion matrix per split, 255 ignored",
        "class_names": list(class_names),
        "measurements": {
            key: {
                "description": _SPECS[m.key]["description"],
                "mean_iou": m.mean_iou,
                "mean_iou_percent": m.percent,
                "dataset": m.dataset,
                "split": m.split,
                "num_images": m.results.num_images,
                "source_file": m.repo_path,
                "source_sha256": _sha256(staging / m.repo_path),
            }
            for key, m in plan.measurements.items()
        },
        "not_measured": plan.not_measured,
    }


def build_hub_folder(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    plan: HubFolder | None = None,
    space_requirement: str | None = None,
) -> HubFolder:
    """
    Writes the Hub folder (see the module docstring) of the checkpoint `model_dir` to `out_dir` through a staging
    folder renamed into place, so it is never left half-written. `out_dir` must not exist, be empty, or (with
    `overwrite`) be a folder this function wrote. `card`, `results`: see `plan_hub_folder`, whose result for these
    arguments `plan` is, if already made. `space_requirement`: how the Space's `requirements.txt` installs this
    package (`app.space.write_space_files`).

    Raises:
        HubSharingError: a bad model directory, card, results source, repo id or output folder (message names it).
    """
    from ..app.space import write_space_files
    from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
    from ..models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not (overwrite and "generated_by" in (read_json(out / RESULTS_FILE, missing_ok=True) or {})):
            hint = (
                " (--overwrite only replaces a folder this command wrote)." if overwrite else " or pass --overwrite."
            )
            raise HubSharingError(f"--dry-run {out}: exists and is not empty. Choose a new folder{hint}")
    plan = plan or plan_hub_folder(model_dir, repo_id, card, results)
    model, info = CPFCTEForWeaklySupervisedSegmentation.from_pretrained(plan.model_path, output_loading_info=True)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
        raise HubSharingError(f"--model {plan.model_path}: the weights do not match the config: {info}")
    processor = CPFCTEImageProcessor.from_pretrained(plan.model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        plots = _copy_results(plan.measurements, staging)
        for name, attribute in TRAINING_RECORDS.items():
            if getattr(plan, attribute):
                _write_public_json(getattr(plan, attribute), staging / name)
        render_model_card(plan, processor, model.num_parameters(), plots).save(staging / "README.md")
        write_space_files(staging, plan.repo_id, space_requirement)
        record = _results_json(plan, staging, [model.config.id2label[i] for i in range(model.config.num_labels)])
        (staging / RESULTS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return dataclasses.replace(plan, path=out, files=files)


def format_hub_folder(folder: HubFolder) -> str:
    """A few lines for the console: card, measured and unmeasured values, files."""
    lines = [f"Hub folder for {folder.repo_id} (card: {folder.card}) in {folder.path}"]
    for key, m in folder.measurements.items():
        where = ", ".join(str(v) for v in (m.dataset, m.split) if v is not None) or "dataset/split not recorded"
        lines.append(f"  {key}: {m.percent:.2f} % ({where}) from {m.source}")
    if folder.not_measured:
        lines.append(f"  {NOT_MEASURED}: {', '.join(folder.not_measured)}")
    lines += [f"  note: {note}" for note in folder.notes]
    lines.append("  files: " + ", ".join(folder.files))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ push


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    card: str = "auto",
    results: Sequence[str | os.PathLike] = (),
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
    space_requirement: str | None = None,
) -> tuple[HubFolder, str]:
    """
    Builds the Hub folder of `model_dir` in a temporary directory, creates `repo_id` if needed and uploads the folder
    in one commit (results files of an earlier push that it no longer has are deleted). The inputs, then offline mode
    and the token (argument, `HF_TOKEN` or `hf auth login`'s), are checked before anything is built. `endpoint`:
    another Hub. Returns (what was built, the commit URL).

    Raises:
        HubSharingError: bad inputs (see `build_hub_folder`).
        HubPushError: offline, no token, or the Hub call failed (the message says which).
    """
    from huggingface_hub import HfApi, constants, get_token

    plan = plan_hub_folder(model_dir, repo_id, card, results)
    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "HF_HUB_OFFLINE is set: pushing needs the network. Unset HF_HUB_OFFLINE, or write the folder with "
            "--dry-run DIR and upload it later (`hf upload USER/NAME DIR`)."
        )
    api = HfApi(token=token or get_token(), endpoint=endpoint)
    if not api.token:
        raise HubPushError(
            "No Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens); or write the folder with --dry-run DIR."
        )
    with tempfile.TemporaryDirectory(prefix="cpfcte-hub-") as tmp:
        folder = build_hub_folder(
            model_dir, Path(tmp) / "repo", repo_id, plan=plan, space_requirement=space_requirement
        )
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder.path,
                commit_message=commit_message or "Upload CPF-CTE checkpoint, model card and results (cpfcte_hf)",
                delete_patterns=["results/*"],
            )
        except Exception as error:  # noqa: BLE001 - network, auth and Hub errors alike end in one clear message
            where = f"{api.endpoint.rstrip('/')}/{repo_id}"
            raise HubPushError(f"Could not push to {where}: {type(error).__name__}: {error}") from error
    return folder, commit.commit_url


__all__ = [
    "HubFolder",
    "build_hub_folder",
    "format_hub_folder",
    "plan_hub_folder",
    "push_to_hub",
]
