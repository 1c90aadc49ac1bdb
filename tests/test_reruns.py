"""Reruns and failed starts of the prediction outputs (`label`, stage-2 prediction, `evaluate`; issue 19): resume is
keyed by the images' content, one run holds an output directory, a failed start leaves nothing behind, and threads
are sized to the machine. (Two real `label` processes into one directory, and real signals: test_pseudo_labeling_signals.)"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import time

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from cpfcte_hf.cli.commands import evaluate as evaluate_command
from cpfcte_hf.cli.commands import label as label_command
from cpfcte_hf.prediction.sources import ContentRecord, DatasetSources, ImageSource, content_key
from cpfcte_hf.utils.distributed import cpu_share, job_threads, resolve_crf_workers
from cpfcte_hf.utils.openmp import TRAINING_SPIN_COUNT, WAIT_MARKER, WAIT_VARIABLES, set_openmp_wait
from cpfcte_hf.utils.output_dir import OutputDirInUse, hold_output_dir

from .test_own_photos import SHAPES, write_folder
from .utils import PYTHON, save_tiny_checkpoint, subprocess_env


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shapes_model")
    save_tiny_checkpoint(directory, num_labels=6, id2label=dict(enumerate(SHAPES)), classifier_init_std=50.0)
    return str(directory)


def label(model, folder, out, *extra):
    """`cpfcte-hf label` of a tagged folder, in this process; returns its exit status."""
    cache = os.path.join(os.path.dirname(os.path.abspath(folder)), "cache")
    return label_command.main(
        ["--model", model, "--dataset", "tagged", "--data_root", folder, "--dataset_option", f"cache_dir={cache}",
         "--output_dir", out, "--size", "32", "--crf_workers", "0", "--no_progress", *extra]
    )  # fmt: skip


def picture(seed: int, size=(28, 36)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def file_bytes(directory) -> dict:
    """The masks under `directory` (`bpm/`, `crf/`): `{relative path: bytes}`."""
    return {
        os.path.relpath(os.path.join(d, n), directory): open(os.path.join(d, n), "rb").read()
        for folder in ("bpm", "crf")
        for d, _, names in os.walk(os.path.join(directory, folder))
        for n in names
        if n.endswith(".png")
    }


def all_paths(root) -> set:
    return {os.path.join(d, n) for d, dirs, names in os.walk(root) for n in [*dirs, *names]}


# ------------------------------------------------------------------------------------------- resume by content


ROWS = [("a.png", ["disc"]), ("b.png", ["ring"]), ("c.png", ["square"])]


def test_a_replaced_photo_is_recomputed_and_counted_as_changed(tmp_path, shapes_model, capsys):
    folder, out = write_folder(tmp_path / "photos", ROWS), str(tmp_path / "masks")
    assert label(shapes_model, folder, out) == 0
    before = file_bytes(out)
    picture(seed=7).save(os.path.join(folder, "a.png"))  # another picture under the same name
    b_path = os.path.join(folder, "b.png")
    os.utime(b_path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: same bytes, new times
    capsys.readouterr()

    assert label(shapes_model, folder, out) == 0
    printed = capsys.readouterr().out
    assert (
        "3 image(s): 0 written, 2 already done, 0 failed, 0 skipped by the loader, 1 changed since their masks were "
        "made (recomputed)"
    ) in printed, printed
    assert "  changed: a\n" in printed
    summary = json.loads(open(os.path.join(out, "summary.json"), encoding="utf-8").read())
    assert (summary["changed"], summary["changed_ids"], summary["already_done"]) == (1, ["a"], 2)

    # The new masks of `a` are those of a fresh run on the new picture; `b` and `c` were not recomputed.
    fresh_folder = write_folder(tmp_path / "fresh", ROWS)
    shutil.copy(os.path.join(folder, "a.png"), os.path.join(fresh_folder, "a.png"))
    assert label(shapes_model, fresh_folder, str(tmp_path / "fresh_masks")) == 0
    after, fresh = file_bytes(out), file_bytes(tmp_path / "fresh_masks")
    assert after["crf/a.png"] == fresh["crf/a.png"] != before["crf/a.png"]
    assert after["bpm/a.png"] == fresh["bpm/a.png"]
    assert {k: v for k, v in after.items() if not k.endswith("a.png")} == {
        k: v for k, v in before.items() if not k.endswith("a.png")
    }
    # The touched file's new times are recorded (the next resume reads no file), with the same digest.
    recorded = ContentRecord(out).load()
    assert recorded["b"]["mtime_ns"] == os.stat(b_path).st_mtime_ns
    assert recorded["b"]["blake2b"] == hashlib.blake2b(open(b_path, "rb").read(), digest_size=20).hexdigest()
    assert not ContentRecord(out).journals()  # folded into sources.json at the end of the run

    capsys.readouterr()
    assert label(shapes_model, folder, out) == 0
    assert "0 written, 3 already done, 0 failed, 0 skipped by the loader, 0 changed" in capsys.readouterr().out


def test_the_cheap_check_reads_a_file_only_when_its_size_or_times_changed(tmp_path):
    path = tmp_path / "photo.jpg"
    picture(seed=1).save(path)
    key = content_key(ImageSource(path=str(path)))
    assert key["blake2b"] == hashlib.blake2b(path.read_bytes(), digest_size=20).hexdigest()
    # Same size and times: the recorded digest is taken as it is (the file is not read).
    assert content_key(ImageSource(path=str(path)), {**key, "blake2b": "recorded"})["blake2b"] == "recorded"
    os.utime(path, ns=(key["mtime_ns"] + 10**9, key["mtime_ns"] + 10**9))
    assert content_key(ImageSource(path=str(path)), {**key, "blake2b": "recorded"})["blake2b"] == key["blake2b"]


def test_images_without_a_file_are_keyed_by_their_bytes_or_their_arrow_value():
    pictures = datasets.Dataset.from_dict({"image": [picture(1), picture(2)]}).cast_column("image", datasets.Image())
    sources = DatasetSources(pictures)
    assert sources(0).path is None and content_key(sources(0)) != content_key(sources(1))
    arrays = datasets.Dataset.from_dict({"image": [[[1, 2], [3, 4]], [[1, 2], [3, 5]]]})
    keys = [content_key(DatasetSources(arrays)(i)) for i in range(2)]
    assert keys[0] != keys[1] and keys[0] == content_key(DatasetSources(arrays.select([0]))(0))


def test_stage_two_recomputes_an_image_whose_bytes_changed(tmp_path):
    from cpfcte_hf.data.shapes import load_shapes
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split

    from .deeplab_helpers import tiny_deeplab_config

    val = load_shapes("val", num_val=3, image_size=40, num_classes=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    config = MultiScaleEvalConfig(scales=(1.0,), crf=True, crf_workers=0, num_overlays=0, progress=False)
    out = tmp_path / "predictions"
    assert predict_split(model, val, out, config)["written"] == 3
    first_id = val[0]["id"]
    # The shapes set keeps its pictures as PNG bytes (no file): replace the first one's bytes, keep the others'.
    stream = io.BytesIO()
    Image.fromarray(np.asarray(val[0]["image"])[:, ::-1].copy()).save(stream, format="PNG")
    raw = val.cast_column("image", datasets.Image(decode=False))
    replaced = raw.map(
        lambda row, i: {"image": {"bytes": stream.getvalue(), "path": None} if i == 0 else row["image"]},
        with_indices=True,
    ).cast_column("image", datasets.Image())

    again = predict_split(model, replaced, out, config)
    assert (again["written"], again["changed"], again["already_done"]) == (0, [first_id], 2)
    fresh = predict_split(model, replaced.select([0]), tmp_path / "fresh", config)
    assert fresh["written"] == 1
    for folder in ("ms", "ms_crf"):
        assert (out / folder / f"{first_id}.png").read_bytes() == (
            tmp_path / "fresh" / folder / f"{first_id}.png"
        ).read_bytes()
    assert predict_split(model, replaced, out, config)["already_done"] == 3


# ----------------------------------------------------------------------------------------------- failed starts


def test_a_failed_start_leaves_nothing_and_tags_are_checked_before_the_weights(tmp_path, shapes_model, capsys):
    """Each failing `label` / `evaluate` start exits 2 with one `error:` line and creates no path; a bad tags file is
    reported before the weights are read (here they are garbage: reading them would fail first)."""
    folder = write_folder(tmp_path / "photos", ROWS)
    bad_tags = write_folder(tmp_path / "bad_tags", [("a.png", ["disc"]), ("b.png", ["dog"])])
    garbage = tmp_path / "garbage_model"
    shutil.copytree(shapes_model, garbage)
    (garbage / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    existing = str(tmp_path / "existing")
    assert label(shapes_model, folder, existing) == 0
    label(shapes_model, folder, str(tmp_path / "pred_only"), "--no_crf")
    capsys.readouterr()

    def fails(run, message):
        paths = all_paths(tmp_path)
        assert run() == 2
        lines = capsys.readouterr().err.strip().splitlines()
        error = [line for line in lines if not line.endswith("it/s]")]  # transformers' weight-loading bar aside
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], lines
        assert all_paths(tmp_path) - paths == set(), all_paths(tmp_path) - paths

    fails(lambda: label(str(garbage), bad_tags, str(tmp_path / "out1")), "'dog'")
    fails(lambda: label(shapes_model, str(tmp_path / "no_such_folder"), str(tmp_path / "out2")), "no_such_folder")
    fails(lambda: label(str(tmp_path / "no_model"), folder, str(tmp_path / "out3" / "sub")), "no_model")
    fails(lambda: label(shapes_model, folder, existing, "--size", "64"), "size: 32 -> 64")
    fails(
        lambda: evaluate_command.main(
            ["--pred", str(tmp_path / "pred_only" / "bpm"), "--dataset", "voc", "--data_root", str(tmp_path / "none")]
        ),
        "none",
    )


def test_stage_two_refused_settings_create_no_folder(tmp_path):
    from cpfcte_hf.data.shapes import load_shapes
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split
    from cpfcte_hf.utils.fingerprint import FingerprintMismatch

    from .deeplab_helpers import tiny_deeplab_config

    val = load_shapes("val", num_val=2, image_size=40, num_classes=2, cache_dir=str(tmp_path / "cache"))
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    out = tmp_path / "predictions"
    settings = dict(scales=(1.0,), crf_workers=0, num_overlays=0, progress=False)
    predict_split(model, val, out, MultiScaleEvalConfig(crf=False, **settings))
    paths = all_paths(tmp_path)
    with pytest.raises(FingerprintMismatch, match="crf"):
        predict_split(model, val, out, MultiScaleEvalConfig(crf=True, **settings))
    assert all_paths(tmp_path) == paths
    with pytest.raises(ValueError, match="'image' column"):
        predict_split(model, val.remove_columns("image"), tmp_path / "other", MultiScaleEvalConfig(**settings))
    assert all_paths(tmp_path) == paths


# ---------------------------------------------------------------------------------- one run per output directory


HOLDER = """
import os, sys, time
from cpfcte_hf.utils.output_dir import hold_output_dir
with hold_output_dir(sys.argv[1]):
    print("held", os.environ.get("OMP_WAIT_POLICY"), flush=True)
    time.sleep(120)
"""


WAIT_CODE = "import os, cpfcte_hf; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, ["None", "PASSIVE"]),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ["None", "ACTIVE"]),
        ({"GOMP_SPINCOUNT": "5"}, ["5", "None"]),
        # a training process's own setting, inherited: a child of another kind chooses its own
        ({"GOMP_SPINCOUNT": TRAINING_SPIN_COUNT, WAIT_MARKER: "training"}, ["None", "PASSIVE"]),
    ],
)
def test_openmp_wait_settings_of_the_environment_win(given, expected):
    """Importing cpfcte_hf makes idle OpenMP threads sleep at once, unless the environment chose how they wait."""
    env = {key: value for key, value in subprocess_env().items() if key not in (*WAIT_VARIABLES, WAIT_MARKER)}
    result = subprocess.run(
        [PYTHON, "-c", WAIT_CODE], env={**env, **given}, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == expected


@pytest.mark.parametrize(
    "command, spins",
    [
        ("train", True),
        ("train-deeplab", True),
        ("train-segmenter", True),
        ("run", True),  # the workflows run their trainings in their own process
        ("demo", True),
        ("reproduce", True),
        ("label", False),  # the CRF workers need the cores the spinning threads would take
        ("evaluate", False),
    ],
)
@pytest.mark.parametrize("user_choice", [False, True])
def test_training_commands_spin_briefly_before_torch_loads(
    monkeypatch, clean_openmp_environment, command, spins, user_choice
):
    """The commands that train a model set the short spin first thing (their `--help` imports no torch), a user's
    choice stays; the others keep the package's default, sleep at once."""
    import importlib

    from cpfcte_hf.cli.main import COMMANDS

    if user_choice:
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    else:
        set_openmp_wait(training=False)  # what importing cpfcte_hf did
    module = importlib.import_module(COMMANDS[command][0])
    with pytest.raises(SystemExit):
        module.main(["--help"])
    wanted = (None, TRAINING_SPIN_COUNT) if spins and not user_choice else ("PASSIVE", None)
    assert (os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")) == wanted


def test_every_writer_is_refused_a_directory_another_process_holds(tmp_path, shapes_model):
    """The library entry points of the three outputs (stage 1, stage 2, evaluation) refuse a held directory, naming
    the holder; nested holds of one process are one hold, and the lock files go when it ends."""
    from cpfcte_hf.data import load_tagged_images
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.evaluation.report import run_evaluation
    from cpfcte_hf.prediction.pseudo_labels import generate_pseudo_labels
    from cpfcte_hf.prediction.segment import predict_split
    from cpfcte_hf.utils.checkpoints import load_model

    from .deeplab_helpers import tiny_deeplab_config

    model, _ = load_model(shapes_model)
    photos = load_tagged_images(
        write_folder(tmp_path / "photos", ROWS), class_names=model, cache_dir=str(tmp_path / "c")
    )

    held = tmp_path / "held"
    env = subprocess_env()
    for name in (*WAIT_VARIABLES, WAIT_MARKER):  # (importing cpfcte_hf in this process set them)
        env.pop(name, None)
    holder = subprocess.Popen([PYTHON, "-c", HOLDER, str(held)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        # Idle OpenMP threads sleep: the package sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (spinning
        # threads made two runs side by side 5x slower; a value in the environment wins).
        assert holder.stdout.readline().split() == ["held", "PASSIVE"]
        record = json.loads((held / ".cpfcte-hf.lock.json").read_text())
        assert record["pid"] == holder.pid and record["command"].endswith(str(held))
        message = rf"{held} is in use by another run \(pid {holder.pid} on [^,]+, started [0-9T:+-]+: python[0-9.]* -c"
        with pytest.raises(OutputDirInUse, match=message):
            generate_pseudo_labels(model, photos, held)
        with pytest.raises(OutputDirInUse, match=message):
            predict_split(DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()), photos, held)
        (tmp_path / "pred").mkdir()
        Image.new("P", (4, 4)).save(tmp_path / "pred" / "x.png")
        with pytest.raises(OutputDirInUse, match=message):
            run_evaluation([tmp_path / "pred"], report_dir=held)
    finally:
        holder.kill()
        holder.wait()
    with hold_output_dir(held) as root, hold_output_dir(held):
        assert (root / ".cpfcte-hf.lock").is_file()
    assert not (held / ".cpfcte-hf.lock").exists() and not (held / ".cpfcte-hf.lock.json").exists()


# ---------------------------------------------------------------------------------------------------- threads


def test_threads_and_crf_workers_share_the_cpus_of_the_machine(monkeypatch):
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))  # more processes on this machine than CPUs: one each
    assert cpu_share() == 1 and resolve_crf_workers(None, None) == 1 and resolve_crf_workers(3, None) == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert cpu_share() == cpus
    before = torch.get_num_threads()
    torch.set_num_threads(cpus + 3)
    try:
        with job_threads():
            assert torch.get_num_threads() == cpus
        assert torch.get_num_threads() == cpus + 3
        monkeypatch.setenv(WAIT_MARKER, "training")  # a process that spins (`run`, `demo`, a training command):
        with job_threads(crf_workers=2):  # with CRF workers, the model on one thread; its spin would take their cores
            assert torch.get_num_threads() == 1
        with job_threads(crf_workers=0):  # without, its share
            assert torch.get_num_threads() == cpus
        monkeypatch.setenv(WAIT_MARKER, "prediction")  # threads that sleep at once leave the CRF its cores
        with job_threads(crf_workers=2):
            assert torch.get_num_threads() == cpus
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's (or the launcher's) choice wins
        with job_threads(), job_threads(crf_workers=2):
            assert torch.get_num_threads() == cpus + 3
    finally:
        torch.set_num_threads(before)


ALONE = """
import os, sys
import torch
from accelerate.utils import gather_object
from cpfcte_hf.utils.distributed import distributed_state, finish_distributed

torch.set_num_threads(7)
environment = dict(os.environ)
state = distributed_state()
assert (state.num_processes, state.process_index, state.is_main_process) == (1, 0, True), state
assert not torch.distributed.is_initialized(), "a process group of one"
assert torch.get_num_threads() == 7, torch.get_num_threads()
assert dict(os.environ) == environment, "the environment changed"
assert gather_object([{"id": 1}]) == [{"id": 1}]
with state.split_between_processes([1, 2, 3]) as share:
    assert share == [1, 2, 3]
state.wait_for_everyone()
finish_distributed(state)
assert distributed_state().num_processes == 1 and not torch.distributed.is_initialized()
print("alone", state.device, flush=True)
"""


@pytest.mark.parametrize("launcher", [None, "torchrun"])
def test_a_process_alone_has_a_state_of_one_without_a_process_group(tmp_path, launcher):
    """`distributed_state()` is accelerate's `PartialState` in a process alone too (no `None` to branch on): one
    process, main, no process group set up, torch's threads and the environment left as they were; also under a
    launcher of one process (torchrun sets `LOCAL_RANK`, which alone would make accelerate set up a group)."""
    script = tmp_path / "alone.py"
    script.write_text(ALONE)
    env = subprocess_env()
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "RANK", "OMP_NUM_THREADS"):
        env.pop(name, None)
    if launcher == "torchrun":
        env.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        env.update(MASTER_PORT="29531")
    result = subprocess.run([PYTHON, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alone" in result.stdout
