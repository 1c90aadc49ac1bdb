# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""A module imported on first use: `datasets = lazy_module("datasets")` costs nothing until `datasets.Dataset`.

The command line's front door (`--help`, argument and input checks) goes through modules that also hold the
heavy work; their heavy imports (datasets, torch, transformers) wait until that work runs.
"""

from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self):
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = target
        return target

    def __getattr__(self, name: str):
        return getattr(self._load(), name)

    def __dir__(self):
        return dir(self._load())


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module `name` that imports it on the first attribute access."""
    return _LazyModule(name)
