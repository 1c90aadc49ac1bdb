# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Headless Chromium for looking at `report.html` from code: the browser tests and `cpfcte-hf bench report`.

The system's Chromium (Debian's `chromium` package at `/usr/bin/chromium`, or `$CPFCTE_CHROMIUM`), driven by
Playwright for Python (the `dev` extra), which downloads no browser of its own here. Playwright's `launch` runs it
headless with a fresh temporary profile (its own `--user-data-dir`) every time.
"""

from __future__ import annotations

import os


CHROMIUM = os.environ.get("CPFCTE_CHROMIUM", "/usr/bin/chromium")
# Flags that work as root in a container and on CI: no sandbox, no GPU, nothing fetched from the network.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_problem() -> str | None:
    """Why headless Chromium cannot be driven here (`None` when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not os.path.isfile(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CPFCTE_CHROMIUM)"
    return None


def launch_chromium(playwright):
    """A headless Chromium browser from a started `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))


__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "chromium_problem", "launch_chromium"]
