# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The Space files of a Hub folder (`cpfcte-hf push`): `app.py` and `requirements.txt`.

Copied into a Gradio Space (a Space repo whose README says `sdk: gradio`), they run this package's app (label
mode) on the pushed checkpoint, loaded from the Hub with `trust_remote_code=True`. The Space installs this package
(`requirements.txt`), whose registered classes then build the model (the code files pushed with the model are the
same classes, for those who load it without the package). `CPFCTE_MODEL` points the same `app.py` at another Hub id
or a local folder (as the tests do).
This module imports nothing from Gradio: `push` works without the `app` extra.
"""

from __future__ import annotations

import os
from pathlib import Path


SPACE_FILES = ("app.py", "requirements.txt")

APP_TEMPLATE = '''\
"""Label photos with the CPF-CTE model {repo_id}: upload photos, tick their tags, download the masks.

A Gradio Space (written by `cpfcte-hf push`): copy this file and requirements.txt into a Space repo with
`sdk: gradio`. CPFCTE_MODEL names another model (a Hub id or a local folder).
"""

import os

from cpfcte_hf.app import build_app, launch_app, load_app_models


MODEL = os.environ.get("CPFCTE_MODEL", {repo_id!r})

# The model's repo holds its code files too (trust_remote_code); the installed package's classes are the same.
models = load_app_models(MODEL, trust_remote_code=True)
demo = build_app(models, title={title!r})

if __name__ == "__main__":
    # A Space sets GRADIO_SERVER_NAME=0.0.0.0 and its port; run locally, the page stays on 127.0.0.1.
    launch_app(
        demo,
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
'''


def default_space_requirement() -> str:
    from .. import __version__

    return f"cpfcte-hf[app]=={__version__}"


def write_space_files(folder: str | os.PathLike, repo_id: str, requirement: str | None = None) -> list[str]:
    """
    Writes `app.py` and `requirements.txt` into `folder`. `requirement`: how the Space installs this package
    (default `cpfcte-hf[app]==<this version>`; e.g. a `git+https://...` URL or a wheel's URL where the package is
    not on PyPI).
    """
    folder = Path(folder)
    title = f"CPF-CTE · {repo_id.split('/')[-1]}"
    (folder / "app.py").write_text(APP_TEMPLATE.format(repo_id=repo_id, title=title), encoding="utf-8")
    requirement = requirement or default_space_requirement()
    lines = [
        "# The Space's Python packages: this package with its app extra (Gradio); it brings torch and transformers.",
        requirement,
    ]
    (folder / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list(SPACE_FILES)


__all__ = ["SPACE_FILES", "default_space_requirement", "write_space_files"]
