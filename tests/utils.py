"""Small builders shared by the tests: tiny configs and checkpoints that run in milliseconds on a CPU."""

import os
import sys
import textwrap
from pathlib import Path

from transformers import ViTConfig

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, CPFCTEImageProcessor


def tiny_vit_config(**overrides) -> ViTConfig:
    """A 2-layer, 32-wide ViT with 8-pixel patches at 32x32 (a 4x4 patch grid)."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    values.update(overrides)
    return ViTConfig(**values)


def tiny_config(num_labels: int = 4, **overrides) -> CPFCTEConfig:
    """A CPF-CTE config on the tiny ViT; class 0 is background, then `class_1`..."""
    id2label = {0: "background", **{i: f"class_{i}" for i in range(1, num_labels)}}
    values = dict(backbone_config=tiny_vit_config(), id2label=id2label, lstm_hidden_size=8, pooling_top_k=2)
    values.update(overrides)
    return CPFCTEConfig(**values)


def save_tiny_checkpoint(directory, num_labels: int = 4, image_size: int = 32, seed: int = 0, **overrides):
    """Saves a randomly initialised tiny model and its image processor; returns (model, processor)."""
    import torch

    torch.manual_seed(seed)
    model = CPFCTEForWeaklySupervisedSegmentation(tiny_config(num_labels, **overrides)).eval()
    processor = CPFCTEImageProcessor(size={"height": image_size, "width": image_size})
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


# Prepended to a subprocess's code: makes `import cpfcte_hf` fail there, as on a machine without the package.
BLOCK_PACKAGE_IMPORT = textwrap.dedent(
    """
    import sys
    class _BlockCpfcte:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "cpfcte_hf":
                raise ImportError("cpfcte_hf is blocked in this process")
    sys.meta_path.insert(0, _BlockCpfcte())
    try:
        import cpfcte_hf
    except ImportError:
        pass
    else:
        raise SystemExit("cpfcte_hf was importable")
    """
)


def free_port() -> int:
    """A TCP port that is free now on 127.0.0.1 (for `accelerate launch --main_process_port`)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(num_processes: int = 2) -> list[str]:
    """The start of an `accelerate launch` command line for `num_processes` CPU processes on this machine, on a port
    that is free now (tests run side by side under `pytest -n`: accelerate's default port 29500 would be taken)."""
    return [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
        str(num_processes), "--num_machines", "1", "--main_process_port", str(free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip


def subprocess_env() -> dict:
    """Environment for subprocesses: offline, unbuffered, and without the repo on the import path."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    return env


def markdown_python_blocks(text: str) -> list[tuple[int, str]]:
    """`(line of the opening fence, code)` of every ```python block of a Markdown text (README, model card)."""
    blocks, lines = [], text.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip() == "```python":
            end = next(i for i in range(number, len(lines)) if lines[i].strip() == "```")
            blocks.append((number, "\n".join(lines[number:end]) + "\n"))
    return blocks


PYTHON = sys.executable
