"""`cpfcte-hf app` (issue 23): label mode and review mode in a real headless Chromium against the running Gradio
app, the review file, the upload limits, the file route's refusals, bad inputs, the Space files of `push`, and
`train-deeplab` leaving rejected images out.

The browser tests skip when Chromium, Playwright or Gradio is missing here, and fail instead on CI (`CI` set), where
`.ci/run` installs them. Screenshots go to each test's `tmp_path`, and also to `tests/artifacts/` (git-ignored).
"""

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.app.limits import AppInputError, UploadLimits, UploadRefused, read_upload
from cpfcte_hf.cli.commands.app import main as app_main
from cpfcte_hf.cli.commands.label import main as label_main
from cpfcte_hf.models.cpfcte.visualization import read_mask
from cpfcte_hf.review import ReviewFileError, read_review, record_decision, rejected_ids

from .test_html_report import browser  # noqa: F401  (the module's headless Chromium)
from .utils import save_tiny_checkpoint, subprocess_env


CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
TAGS = {"a.png": ["class_1"], "b.png": ["class_2", "class_3"], "c.png": ["class_3"]}


def _gradio_problem():
    try:
        import gradio  # noqa: F401
    except ImportError:
        return "Gradio is not installed (pip install -e '.[dev,app]')"
    return None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny model and `cpfcte-hf label` on a folder of three tagged photos."""
    root = tmp_path_factory.mktemp("app")
    save_tiny_checkpoint(root / "model", num_labels=4, classifier_init_std=50.0)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in TAGS:
        Image.fromarray(rng.integers(0, 256, (28, 36, 3), dtype=np.uint8)).save(photos / name)
    with open(photos / "tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "tags"])
        writer.writerows((name, ";".join(tags)) for name, tags in TAGS.items())
    args = ["--model", str(root / "model"), "--dataset", "tagged", "--data_root", str(photos)]
    args += ["--dataset_option", f"cache_dir={root / 'cache'}", "--out", str(root / "out")]
    assert label_main([*args, "--size", "32", "--crf_workers", "0", "--no_progress"]) == 0
    return root


def snapshot(directory) -> dict:
    """`{relative path: sha1}` of every file under `directory`."""
    return {
        os.path.relpath(os.path.join(folder, name), directory): hashlib.sha1(
            open(os.path.join(folder, name), "rb").read()
        ).hexdigest()
        for folder, _, names in os.walk(directory)
        for name in names
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(run_dir):
    """The app of `cpfcte-hf app --model MODEL --review OUT` on a free port of 127.0.0.1, over a copy of the run."""
    reason = _gradio_problem()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"The app tests must run on CI: {reason}.")
        pytest.skip(reason)
    from cpfcte_hf.app import launch_app
    from cpfcte_hf.cli.commands.app import parse_arguments, prepare

    out = run_dir / "reviewed"  # a copy next to the original: the report's links to the photos still hold
    shutil.copytree(run_dir / "out", out)
    (args,) = parse_arguments(["--model", str(run_dir / "model"), "--review", str(out)])
    demo, review = prepare(args)
    port = free_port()
    _, url = launch_app(demo, port=port, review=review, block=False)
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1" and demo.server_name == "127.0.0.1"  # safe defaults
    assert not demo.share
    yield {"url": url, "out": out, "review": review, "root": run_dir}
    demo.close()


def open_app(browser, url):  # noqa: F811
    """A new page on the app with the requests that leave 127.0.0.1 and script errors recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    events = {"errors": [], "requests": []}
    host = urllib.parse.urlsplit(url).netloc
    page.on("pageerror", lambda error: events["errors"].append(str(error)))
    page.on("request", lambda r: urllib.parse.urlsplit(r.url).netloc == host or events["requests"].append(r.url))
    page.goto(url)
    page.get_by_role("tab", name="Label photos").wait_for()
    return page, events


def screenshot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(path, os.path.join(ARTIFACTS, path.name))
    return path


# ------------------------------------------------------------------------------------------------------ label mode


def test_label_mode_in_chromium_gives_a_mask_of_the_ticked_tag_and_says_why_others_were_not_labelled(
    browser,  # noqa: F811
    app,
    tmp_path,
):
    photo = app["root"] / "photos" / "b.png"
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "<img src=x onerror=alert(1)>_[x](y).jpg").write_text("a name that would be markup")
    Image.new("RGB", (5, 5)).save(tmp_path / "tiny.png")
    page, events = open_app(browser, app["url"])
    page.get_by_role("tab", name="Label photos").click()
    names = [
        str(photo),
        str(tmp_path / "notes.txt"),
        str(tmp_path / "tiny.png"),
        str(tmp_path / "<img src=x onerror=alert(1)>_[x](y).jpg"),
    ]
    page.locator("#photos input[type=file]").set_input_files(names)
    page.locator("#photos [aria-label='tiny.png']").wait_for()
    page.locator("#tags").get_by_label("class_2").check()
    page.locator("#label-button").click()
    message = page.locator("#label-message")
    message.get_by_text("Labelled 1 photo(s)").wait_for()
    text = message.inner_text()
    assert "notes.txt: not an image file." in text
    # A file name is text, never markup or a link (Gradio drops the name's < and > at upload; the app escapes the rest).
    assert "src=x onerror=alert(1)_[x](y).jpg: not an image file." in text
    assert message.locator("img, a").count() == 0
    assert "tiny.png: the photo is 5x5 pixels, smaller than one 8x8 patch" in text
    page.locator("#overlays img").first.wait_for()
    links = page.locator("#masks a[download]")
    assert links.count() == 1 and links.first.get_attribute("download") == "b.png"
    response = page.request.get(links.first.get_attribute("href"))
    assert response.ok
    mask = read_mask(io.BytesIO(response.body()))
    assert mask.shape == (28, 36)
    assert set(np.unique(mask).tolist()) == {0, 2}  # only the ticked tag's id and background
    screenshot(page, tmp_path, "app_label_mode")

    # No tag ticked and no stage-2 model: the page says what untagged photos need.
    page.locator("#tags").get_by_label("class_2").uncheck()
    page.locator("#label-button").click()
    page.locator("#label-message").get_by_text("--stage2").wait_for()
    assert events == {"errors": [], "requests": []}  # no CDN, no analytics: nothing left 127.0.0.1
    page.close()


def test_uploads_over_the_limits_are_refused_with_their_reason(tmp_path):
    Image.new("RGB", (100, 80)).save(tmp_path / "big.png")
    with pytest.raises(UploadRefused, match=r"big.png: 100x80 = 0.0 megapixels, more than"):
        read_upload(tmp_path / "big.png", UploadLimits(max_pixels=7999))
    with pytest.raises(UploadRefused, match=r"big.png: .* MB, more than"):
        read_upload(tmp_path / "big.png", UploadLimits(max_bytes=10))
    (tmp_path / "fake.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(UploadRefused, match=r"fake.jpg: "):
        read_upload(tmp_path / "fake.jpg", UploadLimits())
    assert read_upload(tmp_path / "big.png", UploadLimits()).shape == (80, 100, 3)


# ----------------------------------------------------------------------------------------------------- review mode


def test_review_mode_in_chromium_rejects_the_worst_image_into_review_json(browser, app, tmp_path):  # noqa: F811
    out, review = app["out"], app["review"]
    before = snapshot(out)
    scores = {row.id: row.score for row in review.items}
    worst = min(scores, key=scores.get)
    assert [item.id for item in review.items][0] == worst and set(scores) == {"a", "b", "c"}

    page, events = open_app(browser, app["url"])
    page.get_by_role("tab", name="Review a run").click()
    info = page.locator("#review-info")
    info.get_by_text("1 of 3").wait_for()
    assert f"(worst first) · {worst} · tag score" in info.inner_text()
    page.locator("#review-mask img").wait_for()
    screenshot(page, tmp_path, "app_review_mode")
    page.locator("#review-reject").click()
    page.locator("#review-message").get_by_text("rejected").wait_for()
    info.get_by_text("2 of 3").wait_for()  # on to the next image

    decisions = json.loads((out / "review.json").read_text())
    assert decisions["format"] == "cpfcte-hf-review" and decisions["version"] == 1
    assert list(decisions["decisions"]) == [worst] and decisions["decisions"][worst]["decision"] == "reject"
    assert rejected_ids(out) == {worst}
    after = snapshot(out)
    assert set(after) - set(before) == {"review.json"} and all(after[k] == v for k, v in before.items())
    assert events == {"errors": [], "requests": []}
    page.close()


def test_retag_relabels_the_image_with_its_new_tags_and_changes_nothing_else(app, run_dir):
    from cpfcte_hf.app.label_mode import load_app_models
    from cpfcte_hf.app.review_mode import ReviewSession

    out = app["out"]
    session = ReviewSession(out, app["review"].models)
    index = next(k for k, item in enumerate(session.items) if item.id == "a")
    before = snapshot(out)
    assert set(np.unique(read_mask(out / "crf" / "a.png")).tolist()) <= {0, 1}
    session.retag(index, ["class_3"])
    assert set(np.unique(read_mask(out / "crf" / "a.png")).tolist()) == {0, 3}
    assert set(np.unique(read_mask(out / "bpm" / "a.png")).tolist()) <= {0, 3}
    entry = read_review(out)["a"]
    assert entry["decision"] == "retag" and entry["tags"] == ["class_3"] and entry["time"].endswith("Z")
    after = snapshot(out)
    changed = {k for k in before if before[k] != after.get(k)} | (set(after) - set(before))
    assert changed <= {"review.json", "crf/a.png", "bpm/a.png"} and {"crf/a.png", "review.json"} <= changed
    assert session.current_tags(session.items[index]) == ["class_3"]

    # Another model's weights did not make these masks: a retag with it is refused, nothing is written.
    save_tiny_checkpoint(run_dir / "other", num_labels=4, seed=1)
    other = ReviewSession(out, load_app_models(run_dir / "other"))
    with pytest.raises(ValueError, match="is not the model that made these masks"):
        other.retag(index, ["class_1"])
    assert snapshot(out) == after


def test_file_route_serves_only_the_output_directory(app):
    out, url = app["out"], app["url"].rstrip("/")
    secret = app["root"] / "photos" / "a.png"
    (out / "link.png").symlink_to(secret)  # a link inside the output directory to a file outside it
    try:

        def status(target: str) -> int:
            request = urllib.request.Request(f"{url}/gradio_api/file={target}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status(str(out / "crf" / "a.png")) == 200  # under the output directory: served
        for target in (
            f"{out}/../../{secret.parent.parent.name}/photos/a.png",
            str(secret),
            "/etc/passwd",
            "../../../../../../etc/passwd",
            urllib.parse.quote(f"{out}/../{'../' * 8}etc/passwd", safe=""),
            str(out / "link.png"),
            str(out / ".cpfcte-hf.lock"),
        ):
            assert status(target) in (403, 404), target
    finally:
        (out / "link.png").unlink()


@pytest.mark.slow
def test_the_command_serves_on_localhost_only_and_stops_on_sigterm_leaving_nothing(run_dir, tmp_path):
    if _gradio_problem() and not os.environ.get("CI"):
        pytest.skip(_gradio_problem())
    import signal
    import time

    port = free_port()
    env = {**subprocess_env(), "TMPDIR": str(tmp_path)}  # the app's private folder is made here
    env.pop("GRADIO_TEMP_DIR", None)  # set in this process by the app fixture
    command = [sys.executable, "-m", "cpfcte_hf", "app", "--model", str(run_dir / "model"), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 480  # a loaded machine imports torch and Gradio slowly
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
                time.sleep(1)
        assert [p.name for p in tmp_path.glob("cpfcte-app-*")]  # its uploads and masks live there while it runs
        with socket.socket() as probe:  # nothing listens on the machine's other addresses
            address = next((a for a in _other_addresses() if not a.startswith("127.")), None)
            if address is not None:
                assert probe.connect_ex((address, port)) != 0
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-2000:]
    assert f"http://127.0.0.1:{port}" in stdout and "stopped (interrupted by SIGTERM" in stderr
    assert not list(tmp_path.glob("cpfcte-app-*"))  # removed at exit


def _other_addresses() -> list[str]:
    """The machine's outgoing IPv4 address (the route to a documentation address; nothing is sent), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return [probe.getsockname()[0]]
    except OSError:
        return []


# --------------------------------------------------------------------------------------------- bad inputs, review.json


def test_bad_inputs_are_one_line_errors(run_dir, tmp_path, capsys, monkeypatch):
    assert app_main(["--model", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert app_main(["--model", str(run_dir / "model"), "--review", str(run_dir / "photos")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the output of a run" in err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as on a machine without the extra
    assert app_main(["--model", str(run_dir / "model")]) == 2
    assert "pip install 'cpfcte-hf[app]'" in capsys.readouterr().err


def test_review_file_absent_malformed_and_recorded(tmp_path):
    assert read_review(tmp_path) == {} and rejected_ids(tmp_path) == set()
    record_decision(tmp_path, "x", "reject")
    record_decision(tmp_path, "y", "retag", ["cat"])
    record_decision(tmp_path, "x", "accept")  # a later decision replaces the earlier one
    assert {k: v["decision"] for k, v in read_review(tmp_path).items()} == {"x": "accept", "y": "retag"}
    assert not (tmp_path / ".cpfcte-hf.lock").exists()  # the lock is released
    (tmp_path / "review.json").write_text('{"format": "cpfcte-hf-review", "version": 1, "decisions": {"z": {}}}')
    with pytest.raises(ReviewFileError, match=str(tmp_path / "review.json")):
        rejected_ids(tmp_path)
    (tmp_path / "review.json").write_text("{not json")
    with pytest.raises(ReviewFileError, match="not valid JSON"):
        read_review(tmp_path)


def test_train_deeplab_leaves_rejected_images_out_and_says_how_many(tmp_path, caplog):
    import datasets

    from cpfcte_hf.stage2.train import leave_out_rejected

    dataset = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "image": [None] * 3})
    (tmp_path / "crf").mkdir()
    assert leave_out_rejected(dataset, tmp_path / "crf")[1] == 0
    record_decision(tmp_path, "b", "reject")
    record_decision(tmp_path, "c", "accept")
    kept, left_out = leave_out_rejected(dataset, tmp_path / "crf")
    assert left_out == 1 and kept["id"] == ["a", "c"]
    assert "1 image(s) rejected in" in caplog.text


def test_untagged_photos_go_through_the_stage2_model(run_dir, tmp_path):
    from cpfcte_hf.app.label_mode import label_uploads, load_app_models

    from .deeplab_helpers import save_tiny_deeplab

    save_tiny_deeplab(tmp_path / "deeplab", num_labels=4)
    models = load_app_models(run_dir / "model", stage2=tmp_path / "deeplab")
    photo = run_dir / "photos" / "a.png"
    outcome = label_uploads(models, [str(photo)], [], UploadLimits(), tmp_path)
    assert outcome.problems == [] and len(outcome.files) == 1
    mask = read_mask(outcome.files[0])
    assert mask.shape == (28, 36) and mask.max() < 4
    shares = {row[1]: row[2] for row in outcome.scores}  # stage 2 has no image-level scores: pixel shares
    assert len(shares) == 4 and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert "stage 2" in outcome.overlays[0][1]
    with pytest.raises(AppInputError, match="--stage2 .*not 'deeplab_v2'"):
        load_app_models(run_dir / "model", stage2=run_dir / "model")  # a stage-1 checkpoint is no stage-2 model


# ------------------------------------------------------------------------------------------------------ the Space


@pytest.mark.slow
def test_push_writes_a_space_app_that_builds_the_page_from_the_pushed_folder(run_dir, tmp_path):
    if _gradio_problem() and not os.environ.get("CI"):
        pytest.skip(_gradio_problem())
    from cpfcte_hf.hub.folder import build_hub_folder

    folder = build_hub_folder(run_dir / "model", tmp_path / "hub", "someone/tiny-cpfcte").path
    assert {"app.py", "requirements.txt"} <= {p.name for p in folder.iterdir()}
    assert "cpfcte-hf[app]==" in (folder / "requirements.txt").read_text()
    code = (
        "import runpy, sys; ns = runpy.run_path('app.py', run_name='space');"
        "demo = ns['demo']; print('BLOCKS', type(demo).__name__, type(demo).__module__,"
        " type(ns['models'].model).__module__.split('.')[0])"
    )
    env = {**subprocess_env(), "CPFCTE_MODEL": str(folder)}
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLOCKS Blocks gradio.blocks cpfcte_hf" in result.stdout  # the installed package's classes, as on a Space
    assert "someone/tiny-cpfcte" in (folder / "app.py").read_text()
