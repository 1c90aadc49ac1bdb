"""report.html of `label`, stage-2 prediction and `evaluate` (issue 23): the page model from the run's records, the
thumbnails, and the page itself in a real headless Chromium (Debian's package, driven by Playwright).

The browser tests skip when Chromium or Playwright is missing here, and fail instead on CI (`CI` set), where
`.ci/run` installs them. Screenshots go to each test's `tmp_path`, and also to `$CPFCTE_SCREENSHOT_DIR` when set.
"""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from cpfcte_hf.cli.commands.evaluate import main as evaluate_main
from cpfcte_hf.cli.commands.label import main as label_main
from cpfcte_hf.data import load_split
from cpfcte_hf.evaluation.html_report import NotARunDirectory, read_run_records, write_html_report
from cpfcte_hf.evaluation.html_report.browser import chromium_problem, launch_chromium
from cpfcte_hf.evaluation.html_report.thumbnails import ASSETS_DIR
from cpfcte_hf.evaluation.image_records import ImageScoreLog, read_image_scores
from cpfcte_hf.models.cpfcte.inference import predict_class_probabilities
from cpfcte_hf.models.cpfcte.visualization import read_mask, save_mask
from cpfcte_hf.utils.checkpoints import load_model

from .data_trees import write_voc_tree
from .utils import save_tiny_checkpoint


# A class name and two file names that would be markup if a page pasted them in: the report must show them as text.
SHAPES = ["background", "disc", "square", "triangle", "<u>ring", "cross"]
CLASS_NAMES = ["background", "class_1", "class_2", "class_3"]
HOSTILE = "<img src=x onerror=alert(1)>"  # a photo that is labelled: in the grid
BROKEN = "<svg onload=alert(2)>"  # a file that is no image: skipped by the loader, in the accounting table too


def page_data(html: str) -> dict:
    """The JSON blob the page's script reads."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match, "no data blob in the page"
    return json.loads(match.group(1))


def thumbnails(directory) -> dict:
    """`{relative path: mtime_ns}` of the thumbnails under `report_assets/`."""
    root = os.path.join(directory, ASSETS_DIR)
    return {
        os.path.relpath(os.path.join(folder, name), directory): os.stat(os.path.join(folder, name)).st_mtime_ns
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".jpg")
    }


# ------------------------------------------------------------------------------------------------------ two tiny runs


@pytest.fixture(scope="module")
def tagged_run(tmp_path_factory):
    """`cpfcte-hf label` on a folder of own photos: a file named like markup, an image smaller than a patch (fails),
    a file that is no image and is named like markup too (skipped by the loader) and a photo without a tags row
    (untagged); the model has a class named like markup."""
    root = tmp_path_factory.mktemp("tagged_run")
    save_tiny_checkpoint(root / "model", num_labels=6, id2label=dict(enumerate(SHAPES)), classifier_init_std=50.0)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = [
        (f"{HOSTILE}.jpg", ["disc"]),
        ("a.png", ["square", "<u>ring"]),
        ("b.png", ["cross"]),
        ("tiny.png", ["disc"]),
        (f"{BROKEN}.jpg", ["<u>ring"]),
    ]
    for name, _ in rows[:3]:
        Image.fromarray(rng.integers(0, 256, (28, 36, 3), dtype=np.uint8)).save(photos / name)
    Image.new("RGB", (5, 5)).save(photos / "tiny.png")
    (photos / f"{BROKEN}.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (30, 30)).save(photos / "untagged.jpg")
    with open(photos / "tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "tags"])
        writer.writerows((name, ";".join(tags)) for name, tags in rows)
    args = ["--model", str(root / "model"), "--dataset", "tagged", "--data_root", str(photos)]
    args += ["--dataset_option", f"cache_dir={root / 'cache'}", "--out", str(root / "out")]
    args += ["--size", "32", "--crf_workers", "0", "--no_progress"]
    assert label_main(args) == 1  # one image failed, one was skipped: the others are written
    return {"root": root, "out": root / "out", "args": args}


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    """`cpfcte-hf label` and `cpfcte-hf evaluate` on a VOC tree with ground truth (7 images, 3 classes)."""
    root = tmp_path_factory.mktemp("voc_run")
    save_tiny_checkpoint(root / "model", classifier_init_std=50.0)
    tree = write_voc_tree(root / "voc", splits={"train_aug": 7}, class_names=CLASS_NAMES)
    data = ["--dataset", "voc", "--data_root", tree["root"], "--split", "train_aug"]
    data += ["--dataset_option", f"cache_dir={root / 'cache'}"]
    out = root / "out"
    options = ["--size", "32", "--crf_workers", "0", "--no_progress", "--num_overlays", "0"]
    assert label_main(["--model", str(root / "model"), *data, "--out", str(out), *options]) == 0
    assert evaluate_main(["--pred", str(out / "bpm"), str(out / "crf"), *data, "--out", str(root / "eval")]) == 0
    return {"root": root, "out": out, "eval": root / "eval", "tree": tree, "data": data}


def expected_classes(voc_run) -> dict:
    """Per image, the classes the page's class filter finds it under: tagged, in the ground truth, or predicted (the
    CRF mask), computed here from the files."""
    tree, out = voc_run["tree"], voc_run["out"]
    classes = {}
    for image_id in tree["ids"]["train_aug"]:
        gt = set(np.unique(tree["masks"][image_id]).tolist()) - {255}
        predicted = set(np.unique(read_mask(out / "crf" / f"{image_id}.png")).tolist())
        classes[image_id] = sorted((set(tree["labels"][image_id]) | gt | predicted) - {0})
    return classes


def own_mean_iou(prediction: np.ndarray, reference: np.ndarray, num_labels: int) -> float:
    """mIoU of one image, written out here (not the package's confusion matrix): classes with a union count."""
    keep = reference != 255
    prediction, reference = prediction[keep], reference[keep]
    ious = []
    for c in range(num_labels):
        union = np.sum((prediction == c) | (reference == c))
        if union:
            ious.append(np.sum((prediction == c) & (reference == c)) / union)
    return float(np.mean(ious))


# ------------------------------------------------------------------------------------------------ the page model


def test_label_report_accounts_for_every_image_and_escapes_names(tagged_run):
    out = tagged_run["out"]
    html = (out / "report.html").read_text(encoding="utf-8")
    data = page_data(html)
    rows = {row["id"]: row for row in data["rows"]}
    assert set(rows) == {HOSTILE, "a", "b", "tiny", BROKEN, "untagged.jpg"}
    assert [rows[i]["status"] for i in (HOSTILE, "a", "b")] == ["ok", "ok", "ok"]
    assert rows["tiny"]["status"] == "failed" and "smaller than one 8x8 patch" in rows["tiny"]["reason"]
    assert rows[BROKEN]["status"] == "skipped" and "unreadable image" in rows[BROKEN]["reason"]
    assert rows["untagged.jpg"]["status"] == "skipped" and "no row" in rows["untagged.jpg"]["reason"]
    assert data["panels"] == ["photo", "BPM", "CRF"]
    for image_id in (HOSTILE, "a", "b"):
        assert all(rows[image_id]["thumbnails"]), image_id
        for path in rows[image_id]["thumbnails"]:
            assert (out / path).is_file() and path.startswith(f"{ASSETS_DIR}/")
    assert rows["a"]["tags"] == [2, 4]  # square and <u>ring, the model's ids
    assert rows["tiny"]["thumbnails"][1:] == [None, None]  # no mask: nothing drawn for it

    # Markup in a name never reaches the page as markup: in tables it is escaped, in the data blob \u-escaped.
    for markup in (HOSTILE, BROKEN, "<u>"):
        assert markup not in html, markup
    assert '"id":"\\u003cimg src=x onerror=alert(1)\\u003e"' in html
    assert '<td class="id">&lt;svg onload=alert(2)&gt;</td>' in html  # the skipped file, in the accounting table
    # The page loads nothing from the network and runs only its own script (CSP by hash).
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", html)

    # The image-level scores were recorded during the job: the model's Top-K pooled scores of each image.
    scores = read_image_scores(out)
    assert set(scores) == {HOSTILE, "a", "b"}
    model, processor = load_model(tagged_run["root"] / "model")
    photo = np.asarray(Image.open(tagged_run["root"] / "photos" / "a.png").convert("RGB"))
    labels = np.zeros((1, 6), np.float32)
    labels[0, [0, 2, 4]] = 1
    import torch

    _, expected = predict_class_probabilities(
        model, [photo], torch.from_numpy(labels), 32, image_mean=processor.image_mean, image_std=processor.image_std
    )
    np.testing.assert_allclose(scores["a"], expected[0].numpy(), atol=1e-4)
    shown = dict(rows["a"]["scores"])
    assert set(shown) >= {2, 4} and shown[2] == pytest.approx(scores["a"][2], abs=1e-3)
    assert rows["a"]["tag_score"] == pytest.approx(min(scores["a"][2], scores["a"][4]), abs=1e-4)


def test_report_is_optional_and_a_stale_page_does_not_survive_a_rerun(tagged_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tagged_run["out"], out)
    args = [value if value != str(tagged_run["out"]) else str(out) for value in tagged_run["args"]]
    assert label_main([*args, "--no_report_html"]) == 1
    assert not (out / "report.html").exists()  # the page of the earlier run describes another run: removed
    assert json.loads((out / "summary.json").read_text())["layout"]["report_html"] is None


def test_per_image_miou_is_each_images_own_confusion_matrix(voc_run):
    out, tree = voc_run["out"], voc_run["tree"]
    per_image = json.loads((out / "report" / "per_image.json").read_text())
    data = page_data((out / "report.html").read_text(encoding="utf-8"))
    rows = {row["id"]: row for row in data["rows"]}
    assert set(rows) == set(tree["ids"]["train_aug"]) and data["panels"] == ["photo", "ground truth", "BPM", "CRF"]
    for image_id in tree["ids"]["train_aug"]:
        for name, folder in (("BPM", "bpm"), ("CRF", "crf")):
            expected = own_mean_iou(read_mask(out / folder / f"{image_id}.png"), tree["masks"][image_id], 4)
            assert per_image["images"][image_id]["mean_iou"][name] == pytest.approx(expected, abs=1e-6)
            assert rows[image_id]["miou"][name] == pytest.approx(expected, abs=1e-6)
        assert rows[image_id]["classes"] == expected_classes(voc_run)[image_id]
        assert all(rows[image_id]["thumbnails"])
    assert [option["value"] for option in data["sorts"]][:2] == ["miou:CRF:asc", "miou:CRF:desc"]

    # `evaluate` of the same folders: its own page, the same per-image scores under the folders' names.
    evaluation = page_data((voc_run["eval"] / "report.html").read_text(encoding="utf-8"))
    assert evaluation["panels"] == ["photo", "ground truth", "bpm", "crf"]
    for row in evaluation["rows"]:
        assert row["miou"]["crf"] == pytest.approx(rows[row["id"]]["miou"]["CRF"])


def test_thumbnails_are_kept_when_current_and_redrawn_when_their_mask_changes(voc_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(voc_run["out"], out)
    dataset = load_split("voc", voc_run["tree"]["root"], "train_aug", cache_dir=str(voc_run["root"] / "cache"))
    write_html_report(out, dataset)  # the copy's masks and photos are the same: names stay, only paths moved
    before = thumbnails(out)
    stale = out / ASSETS_DIR / "00" / "left-by-an-older-page.jpg"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"x")

    assert write_html_report(out, dataset) == out / "report.html"
    assert thumbnails(out) == before  # nothing redrawn, the stray file removed
    assert not stale.exists()

    changed = voc_run["tree"]["ids"]["train_aug"][2]
    mask = read_mask(out / "crf" / f"{changed}.png")
    save_mask(np.where(mask == 0, 3, 0).astype(np.uint8), out / "crf" / f"{changed}.png")
    write_html_report(out, dataset)
    after = thumbnails(out)
    row = {r["id"]: r for r in page_data((out / "report.html").read_text(encoding="utf-8"))["rows"]}[changed]
    assert row["thumbnails"][3] in after and row["thumbnails"][3] not in before  # its CRF panel, drawn anew
    assert len(set(before) - set(after)) == 1  # the old CRF panel of that image went, every other one was kept
    assert all(after[path] == before[path] for path in set(before) & set(after))
    assert 3 in row["classes"]


def test_stage2_prediction_writes_its_summary_and_report(tmp_path):
    import torch

    from cpfcte_hf.data.shapes import load_shapes
    from cpfcte_hf.deeplab import DeepLabV2ForSemanticSegmentation
    from cpfcte_hf.prediction.config import MultiScaleEvalConfig
    from cpfcte_hf.prediction.segment import predict_split

    from .deeplab_helpers import tiny_deeplab_config

    val = load_shapes("val", num_val=3, image_size=40, num_classes=2, cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = DeepLabV2ForSemanticSegmentation(tiny_deeplab_config()).eval()
    out = tmp_path / "predictions"
    config = MultiScaleEvalConfig(scales=(1.0,), crf_workers=0, num_overlays=0, progress=False)
    result = predict_split(model, val, out, config, dataset_name="shapes", split="val")
    assert result["report_html"] == str(out / "report.html")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["stage"], summary["written"], summary["prediction_sets"]) == (
        "stage2",
        3,
        {"MS": "ms", "MS+CRF": "ms_crf"},
    )
    records = read_run_records(out)
    assert records.stage == "stage2" and set(records.per_image["images"]) == set(val["id"])
    data = page_data((out / "report.html").read_text(encoding="utf-8"))
    assert data["panels"] == ["photo", "ground truth", "MS", "MS+CRF"]
    assert {row["id"] for row in data["rows"]} == set(val["id"])
    assert all(row["status"] == "ok" and set(row["miou"]) == {"MS", "MS+CRF"} for row in data["rows"])


def test_image_scores_keep_the_last_line_of_an_image_and_skip_a_line_cut_short(tmp_path):
    log = ImageScoreLog(tmp_path)
    log.append(["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    log.append(["a"], np.array([[0.25, 0.75]]))  # a redone image: its newer line wins
    with open(tmp_path / "image_scores.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "scores": [0.5')  # a kill in the middle of a write
    assert read_image_scores(tmp_path) == {"a": [0.25, 0.75], "b": [0.2, 0.8]}


def test_a_folder_that_is_no_run_is_named(tmp_path):
    with pytest.raises(NotARunDirectory, match=re.escape(str(tmp_path))):
        read_run_records(tmp_path)


# -------------------------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Debian's /usr/bin/chromium; Playwright downloads no browser)."""
    reason = chromium_problem()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"The browser tests must run on CI: {reason}. .ci/run installs both.")
        pytest.skip(f"Browser tests skipped: {reason}.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)  # headless, a fresh temporary profile
        yield chromium
        chromium.close()


def open_report(browser, path, fragment=""):
    """A new page on `path` (file://) with the events that must not happen recorded: dialogs (an injected alert),
    script errors, console errors (e.g. a Content-Security-Policy violation) and requests that leave the disk."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(10_000)
    events = {"dialogs": [], "errors": [], "requests": []}

    def on_dialog(dialog):
        events["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: events["errors"].append(str(error)))
    page.on("console", lambda message: message.type == "error" and events["errors"].append(message.text))
    page.on("request", lambda request: request.url.startswith("file:") or events["requests"].append(request.url))
    page.goto(f"file://{path}{fragment}")
    page.wait_for_selector("body[data-ready=true]")
    return page, events


def screenshot(page, tmp_path, name):
    """Full-page screenshot (lazy thumbnails loaded first) into tmp_path and $CPFCTE_SCREENSHOT_DIR."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_function("[...document.images].every(img => img.complete)")
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CPFCTE_SCREENSHOT_DIR"):
        os.makedirs(os.environ["CPFCTE_SCREENSHOT_DIR"], exist_ok=True)
        shutil.copy(path, os.path.join(os.environ["CPFCTE_SCREENSHOT_DIR"], path.name))
    return path


def shown_ids(page) -> list[str]:
    return page.locator("#grid article .name").all_inner_texts()


def every_page(page) -> list[str]:
    """The ids of the cards on every page, in order, paging with the Next button."""
    ids = shown_ids(page)
    while page.locator(".pager .next").first.is_enabled():
        page.locator(".pager .next").first.click()
        ids += shown_ids(page)
    return ids


def test_grid_pages_sorts_worst_first_and_filters_by_class_in_chromium(browser, voc_run, tmp_path):
    out = voc_run["out"]
    per_image = json.loads((out / "report" / "per_image.json").read_text())["images"]
    order = voc_run["tree"]["ids"]["train_aug"]
    worst_first = sorted(order, key=lambda i: (per_image[i]["mean_iou"]["CRF"], order.index(i)))

    page, events = open_report(browser, out / "report.html", "#size=3")
    assert page.locator("#sort").input_value() == "miou:CRF:asc"  # the default order: worst first
    assert page.locator(".page-label").first.inner_text() == "page 1 of 3"
    first_card = page.locator("#grid article").first
    thumbnails_loaded = first_card.locator("img").evaluate_all("images => images.map(i => i.naturalWidth > 0)")
    assert thumbnails_loaded == [True, True, True, True]  # photo, ground truth, BPM, CRF from report_assets/
    screenshot(page, tmp_path, "report_worst_first")
    assert every_page(page) == worst_first  # every image, across the pages, worst first

    page.select_option("#sort", "miou:CRF:desc")
    assert every_page(page) == sorted(order, key=lambda i: (-per_image[i]["mean_iou"]["CRF"], order.index(i)))

    classes = expected_classes(voc_run)
    best_first = sorted(order, key=lambda i: (-per_image[i]["mean_iou"]["CRF"], order.index(i)))
    page.select_option("#page-size", "48")
    for class_id, name in enumerate(CLASS_NAMES[1:], start=1):
        page.select_option("#class-filter", str(class_id))
        assert shown_ids(page) == [i for i in best_first if class_id in classes[i]], name
    page.select_option("#class-filter", "2")
    screenshot(page, tmp_path, "report_class_filter")
    assert events == {"dialogs": [], "errors": [], "requests": []}
    page.close()


def test_hostile_file_names_render_as_text_and_problems_show_their_reason_in_chromium(browser, tagged_run, tmp_path):
    page, events = open_report(browser, tagged_run["out"] / "report.html")
    card = page.locator("#grid article", has=page.get_by_text(HOSTILE, exact=True))
    assert card.count() == 1 and card.locator(".name").is_visible()
    assert card.locator(".name").inner_text() == HOSTILE
    assert page.locator("img[src='x']").count() == 0  # the name made no element
    assert page.locator("#grid article").count() == 6
    tiny = page.locator("#grid article[data-id=tiny]")
    assert "smaller than one 8x8 patch" in tiny.locator(".reason").inner_text()
    broken = page.locator("#grid article", has=page.get_by_text(BROKEN, exact=True))
    assert "unreadable image" in broken.locator(".reason").inner_text()
    assert page.locator("#skipped td.id").first.inner_text() == BROKEN  # the accounting table, rendered by Jinja2
    assert page.locator("svg[onload], u").count() == 0  # no name or class name became an element
    chips = page.locator("#grid article[data-id=a] .chip").all_inner_texts()
    assert chips == ["square", "<u>ring"]
    assert "<u>ring (" in page.locator("#class-filter").inner_text()
    page.select_option("#status-filter", "skipped")
    assert sorted(shown_ids(page)) == sorted([BROKEN, "untagged.jpg"])
    page.select_option("#status-filter", "")
    screenshot(page, tmp_path, "report_own_photos")
    assert events == {"dialogs": [], "errors": [], "requests": []}  # no alert fired, nothing blocked or fetched
    page.close()
