# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The app's time per photo in label mode, in a real browser (`cpfcte-hf app`).

    cpfcte-hf bench app --photos 4 --repeats 3 --output outputs/bench/app.json

A model of the demo's architecture (the `shapes` preset: ViT 192 wide, 2 layers, 8-px patches, inference at 192 px,
the shapes' 11 classes; random weights: the time does not depend on them) is saved to --work-dir, the app is started
on a free port of 127.0.0.1 (`cpfcte_hf.app`), and headless Chromium (Debian's, as the browser tests) uploads
--photos synthetic JPEGs (--height x --width), ticks one tag and presses Label, --repeats times. Timed: from the
click to the page saying the photos are labelled (model, CRF, mask PNGs, overlays, transfer and drawing), per
photo. The same photos through `label_mode.label_uploads` alone (no browser) give the server's share. Prints JSON.
"""

import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from cpfcte_hf.benchmarks.common import machine_description, report_results, summarize, synthetic_image
from cpfcte_hf.utils.arguments import BothSpellingsParser, parse_plain_args


def demo_architecture_model(directory: Path):
    """A random model of the demo's architecture (`presets/shapes.yaml`), saved with its image processor."""
    import torch
    from transformers import ViTConfig

    from cpfcte_hf.data.shapes import BACKGROUND, SHAPE_NAMES

    from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig
    from ..models.cpfcte.image_processing_cpfcte import CPFCTEImageProcessor
    from ..models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation

    torch.manual_seed(0)
    vit = ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=384,
                    image_size=96, patch_size=8)  # fmt: skip
    names = [BACKGROUND, *SHAPE_NAMES]
    config = CPFCTEConfig(backbone_config=vit, id2label=dict(enumerate(names)), pooling_top_k=16, inference_size=192)
    CPFCTEForWeaklySupervisedSegmentation(config).eval().save_pretrained(directory)
    CPFCTEImageProcessor(size={"height": 96, "width": 96}).save_pretrained(directory)
    return names


def write_photos(directory: Path, count: int, height: int, width: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = directory / f"photo_{index}.jpg"
        Image.fromarray(synthetic_image(rng, height, width)).save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


def browser_seconds(url: str, photos: list[str], tag: str, repeats: int) -> list[float]:
    """Seconds from the click on Label to the page's "Labelled N photo(s)", per repeat."""
    from playwright.sync_api import sync_playwright

    from cpfcte_hf.evaluation.html_report.browser import launch_chromium

    samples = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(600_000)
        page.goto(url)
        page.locator("#photos input[type=file]").set_input_files(photos)
        page.locator(f"#photos [aria-label='{os.path.basename(photos[-1])}']").wait_for()
        for _ in range(repeats):
            page.locator("#tags").get_by_label(tag).uncheck()  # the page's message goes back to "No tags ticked"
            page.locator("#label-button").click()
            page.locator("#label-message").get_by_text("No tags ticked").wait_for()
            page.locator("#tags").get_by_label(tag).check()
            started = time.perf_counter()
            page.locator("#label-button").click()
            page.locator("#label-message").get_by_text(f"Labelled {len(photos)} photo(s)").wait_for()
            page.locator("#overlays img").first.wait_for()
            samples.append(time.perf_counter() - started)
        browser.close()
    return samples


def main(argv=None) -> int:
    parser = BothSpellingsParser(prog="cpfcte-hf bench app", description=__doc__)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--work-dir", default=None, help="Default: a temporary folder, removed at the end.")
    parser.add_argument("--output", default=None)
    args = parse_plain_args(parser, argv)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as temporary:
        work = Path(args.work_dir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        names = demo_architecture_model(work / "model")
        photos = write_photos(work, args.photos, args.height, args.width)

        from cpfcte_hf.app import UploadLimits, build_app, launch_app, load_app_models
        from cpfcte_hf.app.label_mode import label_uploads

        models = load_app_models(work / "model")
        server = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            label_uploads(models, photos, [names[1]], UploadLimits(), str(work))
            server.append((time.perf_counter() - started) / len(photos))
        demo = build_app(models)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        _, url = launch_app(demo, port=port, block=False)
        try:
            page = [s / len(photos) for s in browser_seconds(url, photos, names[1], args.repeats)]
        finally:
            demo.close()
    results = {
        "benchmark": "app label mode, seconds per photo",
        "photo": f"{args.width}x{args.height} JPEG",
        "photos_per_click": args.photos,
        "model": "demo architecture (shapes preset), random weights, inference at 192 px, dense CRF",
        "browser_seconds_per_photo": summarize(page),
        "server_seconds_per_photo": summarize(server),
        "load_average": os.getloadavg(),
        "machine": machine_description(__import__("torch").device("cpu")),
    }
    report_results(results, args.output)
    return 0
