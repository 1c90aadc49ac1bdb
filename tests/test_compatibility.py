"""What version 0.1.0 exported and saved keeps working: its public names (`tests/fixtures/v0_1_0/public_api.json`)
and its checkpoints and Hub folder (`checkpoints.tar.gz`), with the package and, by remote code, without it."""

import importlib
import json
import subprocess
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

from tests.utils import BLOCK_PACKAGE_IMPORT, PYTHON, subprocess_env


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1_0"
API = json.loads((FIXTURES / "public_api.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("package", sorted(API["packages"]))
def test_every_name_of_the_public_packages_is_still_exported(package):
    module = importlib.import_module(package)
    exported = API["packages"][package]
    assert set(exported["__all__"]) <= set(module.__all__)
    missing = [name for name in exported["names"] if not hasattr(module, name)]
    assert not missing, f"{package} lost {missing}"


@pytest.mark.parametrize("old_path", sorted(API["modules"]))
def test_every_module_of_0_1_0_still_imports_with_its_names(old_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old_path)
        missing = [name for name in API["modules"][old_path] if not hasattr(module, name)]
    assert not missing, f"{old_path} lost {missing}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The folders 0.1.0 saved, unpacked: `cpfcte/`, `deeplab/`, `hub_cpfcte/` and the logits they gave."""
    folder = tmp_path_factory.mktemp("v0_1_0")
    with tarfile.open(FIXTURES / "checkpoints.tar.gz") as archive:
        archive.extractall(folder, filter="data")
    return folder


@pytest.mark.parametrize(
    "name, model_type, inputs, logits",
    [
        ("cpfcte", "cpfcte", "inputs_cpfcte", "logits_cpfcte"),
        ("hub_cpfcte", "cpfcte", "inputs_cpfcte", "logits_cpfcte"),
        ("deeplab", "deeplab_v2", "inputs_deeplab", "logits_deeplab"),
    ],
)
def test_folders_saved_by_0_1_0_load_with_the_package(saved, name, model_type, inputs, logits):
    expected = np.load(saved / "expected.npz")
    config = AutoConfig.from_pretrained(saved / name)
    assert config.model_type == model_type
    model = AutoModelForSemanticSegmentation.from_pretrained(saved / name).eval()
    assert type(model).__module__.startswith("cpfcte_hf."), type(model).__module__  # the package's class
    assert type(AutoImageProcessor.from_pretrained(saved / name)).__module__.startswith("cpfcte_hf.")
    with torch.no_grad():
        output = model(torch.from_numpy(expected[inputs])).logits.numpy()
    np.testing.assert_allclose(output, expected[logits], rtol=1e-5, atol=1e-6)


def test_folders_saved_by_0_1_0_load_without_the_package(saved):
    code = BLOCK_PACKAGE_IMPORT + (
        "import sys, numpy as np, torch\n"
        "from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation\n"
        "expected = np.load(sys.argv[1] + '/expected.npz')\n"
        "for name, key in (('cpfcte', 'cpfcte'), ('hub_cpfcte', 'cpfcte'), ('deeplab', 'deeplab')):\n"
        "    folder = sys.argv[1] + '/' + name\n"
        "    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "    assert type(model).__module__.startswith('transformers_modules'), type(model).__module__\n"
        "    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)\n"
        "    assert type(processor).__module__.startswith('transformers_modules'), type(processor).__module__\n"
        "    with torch.no_grad():\n"
        "        output = model(torch.from_numpy(expected['inputs_' + key])).logits.numpy()\n"
        "    np.testing.assert_allclose(output, expected['logits_' + key], rtol=1e-5, atol=1e-6)\n"
        "print('remote code ok')\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", code, str(saved)], env=subprocess_env(), cwd=saved, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code ok" in result.stdout
