# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Run a function right after a module has been imported (a one-shot post-import hook on `sys.meta_path`).

The package uses it to register its models with transformers' Auto classes without importing transformers (and
torch) itself: the registration runs when transformers, or one of the model files, has just been imported.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Iterable


def is_initialising(name: str) -> bool:
    """True while module `name` is being executed (imported but not finished)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _AfterExecLoader(importlib.abc.Loader):
    """Wraps a module's loader: executes the module, then calls `callback(name)`."""

    def __init__(self, loader, callback: Callable[[str], None]):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._callback(module.__name__)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_source...: the wrapped loader's
        return getattr(self._loader, name)


class PostImportHook(importlib.abc.MetaPathFinder):
    """Finds `names` (and every submodule of `prefixes`) with the other finders and wraps their loaders so that
    `callback(name)` runs after each."""

    def __init__(self, names: Iterable[str], callback: Callable[[str], None], prefixes: Iterable[str] = ()):
        self.names = frozenset(names)
        self.prefixes = tuple(prefixes)
        self.callback = callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names and not fullname.startswith(self.prefixes):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _AfterExecLoader):
                    spec.loader = _AfterExecLoader(spec.loader, self.callback)
                return spec
        return None


def call_after_import(
    names: Iterable[str], callback: Callable[[str], None], prefixes: Iterable[str] = ()
) -> PostImportHook:
    """Installs (first on `sys.meta_path`) a hook calling `callback(name)` after each of `names`, and each module
    whose name starts with one of `prefixes`, is imported."""
    hook = PostImportHook(names, callback, prefixes)
    sys.meta_path.insert(0, hook)
    return hook


def remove_hook(hook: PostImportHook) -> None:
    if hook in sys.meta_path:
        sys.meta_path.remove(hook)
