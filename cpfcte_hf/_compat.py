# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The module paths of version 0.1.0, kept working for one release: one table, one mechanism.

Version 0.2 laid the package out by the method's stages (`models/`, `data/`, `prediction/`, `evaluation/`,
`stage1/`, `stage2/`, `hub/`, `workflows/`, `cli/`, `benchmarks/`, `utils/`). `MOVED` maps each old module path to
the module(s) that now hold its names:

- an old module that no longer exists (`cpfcte_hf.pseudo_labeling`) is made on import by a finder at the end of
  `sys.meta_path`: a stand-in whose attributes are looked up in its new modules, in order. Importing it gives one
  `DeprecationWarning` naming them;
- an old path that is a package or module again (`cpfcte_hf.prediction`, `cpfcte_hf.data.transforms`) keeps the names
  that left it through its module `__getattr__` (`moved_attribute`), with a `DeprecationWarning` naming the new
  module of that name.

`RENAMED` names the few objects whose name changed. Remove both tables (and this module) in version 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings


REMOVAL = "0.3"

_MODELS = "cpfcte_hf.models"
MOVED: dict[str, tuple[str, ...]] = {
    # models: the remote-code sets, self-contained folders (file names unchanged: saved checkpoints name them)
    "cpfcte_hf.configuration_cpfcte": (f"{_MODELS}.cpfcte.configuration_cpfcte",),
    "cpfcte_hf.modeling_cpfcte": (f"{_MODELS}.cpfcte.modeling_cpfcte",),
    "cpfcte_hf.image_processing_cpfcte": (f"{_MODELS}.cpfcte.image_processing_cpfcte",),
    # the pipelines' remote-code set: the inference core both stages compose, the dense CRF, the class names, the
    # confusion matrix and the palette live next to the model files (a saved pipeline carries them all)
    **{
        f"cpfcte_hf.{name}": (f"{_MODELS}.cpfcte.{name}",)
        for name in ("inference", "crf", "pipelines", "class_names", "metrics", "visualization")
    },
    "cpfcte_hf.deeplab.configuration_deeplab": (f"{_MODELS}.deeplab_v2.configuration_deeplab",),
    "cpfcte_hf.deeplab.modeling_deeplab": (f"{_MODELS}.deeplab_v2.modeling_deeplab",),
    "cpfcte_hf.deeplab.processing": (f"{_MODELS}.deeplab_v2.processing",),
    "cpfcte_hf.deeplab.convert": (f"{_MODELS}.deeplab_v2.convert",),
    # utilities
    "cpfcte_hf.fingerprint": ("cpfcte_hf.utils.fingerprint",),
    "cpfcte_hf.interrupts": ("cpfcte_hf.utils.interrupts",),
    # evaluation
    "cpfcte_hf.results": ("cpfcte_hf.evaluation.results",),
    "cpfcte_hf.image_records": ("cpfcte_hf.evaluation.image_records",),
    "cpfcte_hf.html_report": ("cpfcte_hf.evaluation.html_report",),
    "cpfcte_hf.html_report.browser": ("cpfcte_hf.evaluation.html_report.browser",),
    "cpfcte_hf.html_report.page": ("cpfcte_hf.evaluation.html_report.page",),
    "cpfcte_hf.html_report.records": ("cpfcte_hf.evaluation.html_report.records",),
    "cpfcte_hf.html_report.render": ("cpfcte_hf.evaluation.html_report.render",),
    "cpfcte_hf.html_report.thumbnails": ("cpfcte_hf.evaluation.html_report.thumbnails",),
    # prediction, the stages, the Hub
    "cpfcte_hf.pseudo_labeling": (
        "cpfcte_hf.prediction.pseudo_labels",
        "cpfcte_hf.prediction.config",
        "cpfcte_hf.prediction.outputs",
        "cpfcte_hf.evaluation.report",
        "cpfcte_hf.utils.checkpoints",
        "cpfcte_hf.utils.output_dir",
        "cpfcte_hf.data",
    ),
    "cpfcte_hf.prediction": (
        "cpfcte_hf.prediction.job",
        "cpfcte_hf.prediction.sources",
        "cpfcte_hf.utils.output_dir",
        "cpfcte_hf.utils.distributed",
    ),
    "cpfcte_hf.trainer": (
        "cpfcte_hf.stage1.trainer",
        "cpfcte_hf.stage1.equivariance",
        "cpfcte_hf.stage1.schedule",
        "cpfcte_hf.stage1.evaluation",
        "cpfcte_hf.utils.trainer_mixins",
    ),
    "cpfcte_hf.training": ("cpfcte_hf.stage1.train", "cpfcte_hf.stage1.arguments"),
    "cpfcte_hf.deeplab.training": (
        "cpfcte_hf.stage2.trainer",
        "cpfcte_hf.stage2.dataset",
        "cpfcte_hf.stage2.losses",
        "cpfcte_hf.stage2.optim",
        "cpfcte_hf.prediction.segment",
        "cpfcte_hf.prediction.config",
    ),
    "cpfcte_hf.deeplab.run": ("cpfcte_hf.stage2.train", "cpfcte_hf.stage2.arguments"),
    "cpfcte_hf.hub": (
        "cpfcte_hf.hub.folder",
        "cpfcte_hf.hub.card",
        "cpfcte_hf.hub.card_rows",
        "cpfcte_hf.hub.measurements",
        "cpfcte_hf.hub.public",
    ),
    # workflows, the command line, the benchmarks
    "cpfcte_hf.demo": ("cpfcte_hf.workflows.demo",),
    "cpfcte_hf.reproduce": (
        "cpfcte_hf.workflows.reproduce",
        "cpfcte_hf.workflows.cells",
        "cpfcte_hf.workflows.tables",
    ),
    "cpfcte_hf.cli": ("cpfcte_hf.utils.arguments", "cpfcte_hf.utils.distributed", "cpfcte_hf.utils.argv_rewriting"),
    "cpfcte_hf.commands": ("cpfcte_hf.cli.main",),
    "cpfcte_hf.commands.run": (
        "cpfcte_hf.workflows.run",
        "cpfcte_hf.workflows.steps",
        "cpfcte_hf.workflows.run_plan",
        "cpfcte_hf.workflows.run_checks",
        "cpfcte_hf.workflows.run_results",
    ),
    **{
        f"cpfcte_hf.commands.{name}": (f"cpfcte_hf.cli.commands.{name}",)
        for name in ("train", "label", "evaluate", "push", "train_deeplab", "demo")
    },
    "cpfcte_hf.commands.bench": ("cpfcte_hf.benchmarks",),
    **{
        f"cpfcte_hf.commands.bench_{name}": (f"cpfcte_hf.benchmarks.{name}",)
        for name in ("train", "data", "pseudo_label", "deeplab", "crf_memory", "report", "resume", "concurrency")
    },
    "cpfcte_hf.bench_gpu": ("cpfcte_hf.benchmarks.gpu",),
    "cpfcte_hf.benchmarking": ("cpfcte_hf.benchmarks.common",),
    "cpfcte_hf.data.benchmark": ("cpfcte_hf.benchmarks.loaders",),
    "cpfcte_hf.deeplab.benchmark": ("cpfcte_hf.benchmarks.deeplab_model",),
}
# (old module, old name) -> (new module, new name): objects that changed name as well as place.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {}
# Old packages: their stand-ins get a `__path__`, so that their old submodules are found (by this module's finder).
_OLD_PACKAGES = ("cpfcte_hf.commands", "cpfcte_hf.html_report")


def _warn(message: str) -> None:
    """A DeprecationWarning attributed to the first frame outside the import machinery and this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen") or frame.f_code.co_filename == __file__
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def _lookup(old: str, name: str):
    """`(new module, object)` of `name` of the old module `old`; AttributeError when none of its modules has it."""
    renamed = RENAMED.get((old, name))
    if renamed is not None:
        module = importlib.import_module(renamed[0])
        return f"{renamed[0]}.{renamed[1]}", getattr(module, renamed[1])
    for target in MOVED.get(old, ()):
        module = importlib.import_module(target)
        if name in vars(module) or hasattr(module, name):
            return f"{target}.{name}", getattr(module, name)
    raise AttributeError(f"module {old!r} has no attribute {name!r}")


def moved_attribute(module_name: str, name: str):
    """`__getattr__` of a module that still exists but whose 0.1.0 name `name` moved: the object, and a warning."""
    if name.startswith("__"):
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    where, value = _lookup(module_name, name)
    _warn(f"{module_name}.{name} is deprecated and will be removed in {REMOVAL}: use {where}.")
    return value


class _StandIn(types.ModuleType):
    """An old module path: its names are looked up in the modules that now hold them."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        if name == "__all__":
            return sorted({n for target in MOVED[self.__name__] for n in _public(target)})
        value = _lookup(self.__name__, name)[1]
        return value

    def __dir__(self):
        return sorted(set(super().__dir__()) | {n for target in MOVED[self.__name__] for n in _public(target)})


def _public(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return list(getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]))


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of `MOVED` that no file provides any more (it runs after the path finder)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, is_package=fullname in _OLD_PACKAGES)
        if fullname in _OLD_PACKAGES:
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec):
        return _StandIn(spec.name)

    def exec_module(self, module):
        targets = ", ".join(MOVED[module.__name__])
        _warn(f"{module.__name__} is deprecated and will be removed in {REMOVAL}: import from {targets}.")


def install() -> None:
    """Puts the finder of the old module paths at the end of `sys.meta_path` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
