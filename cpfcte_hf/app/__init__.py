# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`cpfcte-hf app`: a Gradio page to label photos with a model, and to review a labelling run's masks.

    label mode    upload photos, tick their tags, see the masks over them and the class scores, download the
                  mask PNGs (`label_mode`);
    review mode   page through a `cpfcte-hf label` output worst first, accept / reject / retag each image into
                  OUTPUT_DIR/review.json (`review_mode`, `cpfcte_hf.review`).

Gradio is the optional extra `cpfcte-hf[app]`. Safe by default (`launch_app`): the page binds 127.0.0.1, opens no
share link, sends no analytics, fetches nothing from a CDN, bounds uploads (`limits.UploadLimits`), keeps its
uploads and outputs in a private temporary folder removed at exit, and serves no file of the disk except, in review
mode, those under the output directory.

A Space of a pushed model runs the same page: `build_app(load_app_models(REPO_ID, trust_remote_code=True))` (the
`app.py` that `cpfcte-hf push` writes, `space`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from .label_mode import AppModels, build_label_tab, load_app_models
from .limits import AppInputError, UploadLimits


GRADIO_MISSING = "The app needs Gradio: pip install 'cpfcte-hf[app]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def import_gradio():
    """Gradio, with its analytics and version check off (set before it is imported).

    Raises:
        AppInputError: Gradio is not installed (the message says how to install it).
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise AppInputError(GRADIO_MISSING) from None
    return gradio


def private_workdir() -> str:
    """A temporary folder of this process for Gradio's uploads and cache and the app's masks (`GRADIO_TEMP_DIR`,
    unless the user set one), removed at exit: the file route serves nothing another process left in /tmp/gradio."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        folder = tempfile.mkdtemp(prefix="cpfcte-app-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["GRADIO_TEMP_DIR"] = folder
    workdir = os.path.join(os.environ["GRADIO_TEMP_DIR"], "cpfcte-masks")
    os.makedirs(workdir, exist_ok=True)
    return workdir


def build_app(models: AppModels, review=None, limits: UploadLimits | None = None, title: str = "CPF-CTE"):
    """
    The page (`gradio.Blocks`): a label tab, and a review tab when `review` (a `review_mode.ReviewSession`) is given
    (then opened first).
    """
    gr = import_gradio()
    limits = limits or UploadLimits()
    workdir = private_workdir()
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}: weakly supervised masks from image-level tags")
        with gr.Tabs(selected="review" if review is not None else "label"):
            with gr.Tab("Label photos", id="label"):
                build_label_tab(gr, models, limits, workdir)
            if review is not None:
                from .review_mode import build_review_tab

                with gr.Tab("Review a run", id="review"):
                    show, outputs = build_review_tab(gr, review)
                demo.load(lambda: show(0), outputs=outputs)
    demo.upload_limits = limits
    return demo


def launch_app(demo, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, share: bool = False, review=None,
               block: bool = True):  # fmt: skip
    """
    Serves `demo` on `host:port` (127.0.0.1 unless asked), with a share link only when `share`. Gradio refuses
    uploads over the limits' bytes itself; the file route serves only Gradio's own files and, in review mode
    (`review`, a `ReviewSession`), the files under its output directory. Returns `(app, local URL)`; with `block`,
    serves until interrupted.
    """
    limits = getattr(demo, "upload_limits", None) or UploadLimits()
    allowed = [str(review.directory)] if review is not None else []
    blocked = [str(review.directory / name) for name in (".cpfcte-hf.lock", ".cpfcte-hf.lock.json")] if review else []
    app, local_url, _ = demo.launch(
        server_name=host, server_port=port, share=bool(share), inbrowser=False, allowed_paths=allowed,
        blocked_paths=blocked, max_file_size=limits.max_bytes, footer_links=[], quiet=True,
        prevent_thread_lock=not block, ssr_mode=False, mcp_server=False, pwa=False,
    )  # fmt: skip
    return app, local_url


__all__ = [
    "AppInputError",
    "AppModels",
    "GRADIO_MISSING",
    "UploadLimits",
    "build_app",
    "import_gradio",
    "launch_app",
    "load_app_models",
]
