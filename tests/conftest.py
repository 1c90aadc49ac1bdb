import builtins
import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def no_prompt(monkeypatch):
    """transformers asks "Do you wish to run the custom code? [y/N]" through input(): fail the test instead."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"transformers prompted for input: {args}")

    monkeypatch.setattr(builtins, "input", refuse)


@pytest.fixture
def clean_openmp_environment(monkeypatch):
    """No OpenMP wait setting in the environment during the test, and this process's own restored after it: the
    commands set them in their own process (`cpfcte_hf/utils/openmp.py`), which a command called in a test shares."""
    from cpfcte_hf.utils.openmp import WAIT_MARKER, WAIT_VARIABLES

    for name in (*WAIT_VARIABLES, WAIT_MARKER):
        monkeypatch.setenv(name, "")  # records the value (or its absence) that the test's end restores
        monkeypatch.delenv(name)
