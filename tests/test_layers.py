"""Data flows one way through the package: a module imports only from its own layer or the layers below it
(README, "How the package is laid out"). Every import counts, also the ones inside functions, because they run too."""

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "cpfcte_hf"

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS = [
    ("cpfcte_hf.models.cpfcte",),  # the pipelines' remote code: imports only itself (tests/test_pipelines.py)
    ("cpfcte_hf.utils", "cpfcte_hf.review", "cpfcte_hf._compat"),
    ("cpfcte_hf.models", "cpfcte_hf.deeplab"),
    ("cpfcte_hf.data",),
    ("cpfcte_hf.evaluation",),
    ("cpfcte_hf.prediction",),
    ("cpfcte_hf.stage1", "cpfcte_hf.stage2", "cpfcte_hf.app"),
    ("cpfcte_hf.hub",),  # ships the app's Space files with a model
    ("cpfcte_hf.export",),  # writes a dataset card with the hub's card tools
    # The top: the command line and what composes its commands by name (`run`, `reproduce`, `demo` run `train`,
    # `label`, ... through `cli.main.run_command`, as a user would type them), and the benchmarks.
    ("cpfcte_hf.workflows", "cpfcte_hf.cli", "cpfcte_hf.__main__", "cpfcte_hf.benchmarks"),
]


def layer_of(module: str) -> int | None:
    if module == "cpfcte_hf.models.cpfcte":  # the folder's __init__ registers the model: not remote code
        return layer_of("cpfcte_hf.models")
    best, depth = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of the package in `path`; `from . import x` counts as `package.x`."""
    name, found = module_name(path), []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target == "cpfcte_hf":  # `from .. import name`: the submodule or a name
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, target) for line, target in found if target.startswith("cpfcte_hf")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert [module_name(path) for path in MODULES if layer_of(module_name(path)) is None] == ["cpfcte_hf"]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_module_imports_a_higher_layer(path):
    own = layer_of(module_name(path))
    if own is None:  # the package's front door: lazy names for everything
        return
    upward = []
    for line, target in imported_modules(path):
        layer = layer_of(target)
        if target in ("cpfcte_hf.__version__",):
            continue
        if layer is None:  # the front door (`from .. import CPFCTEConfig`) is for users: import where it is defined
            layer = len(LAYERS)
        if layer > own:
            upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_module_imports_an_old_module_path():
    """The 0.1.0 paths (`cpfcte_hf.deeplab`, the moved modules of `cpfcte_hf._compat.MOVED`) are for users' old
    code, with a DeprecationWarning; the package itself imports the new places."""
    from cpfcte_hf._compat import MOVED

    def gone(name: str) -> bool:  # a 0.1.0 module that is no module any more (not one that lost a few names)
        path = PACKAGE.parent.joinpath(*name.split("."))
        return not path.with_suffix(".py").exists() and not (path / "__init__.py").exists()

    old = {"cpfcte_hf.deeplab", *(name for name in MOVED if gone(name))}
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in MODULES
        if module_name(path) not in old and not module_name(path).startswith("cpfcte_hf.deeplab")
        for line, target in imported_modules(path)
        if any(target == name or target.startswith(name + ".") for name in old)
    ]
    assert not found, "\n".join(found)
