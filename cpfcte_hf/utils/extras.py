# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The optional packages some options need (the extras of pyproject.toml), checked without importing them: a missing
one is one line naming the extra, said before any work (`export`, and `run --export` before its first step)."""

from __future__ import annotations

import importlib.util


# export format -> (module it imports, the pip requirement, the extra that installs it)
FORMAT_EXTRAS = {"labelstudio": ("label_studio_converter", "label-studio-converter", "labelstudio")}


def missing_extra(formats, option: str = "--format") -> str | None:
    """The line to print when an export format of `formats` (given with `option`) needs a package that is not
    installed, else None."""
    for name in formats:
        if name in FORMAT_EXTRAS:
            module, requirement, extra = FORMAT_EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                return (
                    f"{option} {name} encodes the masks with {requirement}, which is not installed: "
                    f"pip install 'cpfcte_hf[{extra}]' (or {requirement})."
                )
    return None


__all__ = ["FORMAT_EXTRAS", "missing_extra"]
