# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""`bf16: auto` in a preset (or `--override bf16=auto`): bf16 autocast where the device a command trains on computes
bfloat16 natively, float32 everywhere else.

- a GPU (the command trains on one: a CUDA device and no `use_cpu`): bf16 where `torch.cuda.is_bf16_supported()`;
- the CPU: bf16 where the processor has bfloat16 instructions (`CPU_BF16_FLAGS` among the flags of
  `/proc/cpuinfo`: AVX512-BF16, AMX-BF16); a machine without GPU then trains with `use_cpu` on, which
  `TrainingArguments` asks for bf16 on the CPU. A CPU without them (or whose flags this cannot read) trains in float32:
  torch would emulate bf16 there, slower than float32.

Resolved when a preset's values are given to a command (`utils.presets.preset_values_for`), so that every record of a
run (its `run_preset.yaml` values as each step parsed them, `run_config.json`, the card) holds the precision used.
"""

from __future__ import annotations

import argparse

from .options import string_to_bool


AUTO = "auto"
CPUINFO = "/proc/cpuinfo"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bfloat16 instruction sets of this machine's processor (`CPU_BF16_FLAGS` found in `cpuinfo`); empty where
    it has none or the file cannot be read (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO) as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def _trains_on_gpu(values: dict) -> bool:
    try:  # `use_cpu` as the parser reads a flag's value (true, yes, 1, ...)
        if string_to_bool(str(values.get("use_cpu", False))):
            return False
    except argparse.ArgumentTypeError:
        pass  # not a flag's value: the parser's error, when the command parses it
    import torch

    return torch.cuda.is_available()


def resolve_auto_bf16(values: dict) -> dict:
    """`values` (a command's options from a preset) with `bf16: auto` replaced by True or False (see the module
    docstring); `use_cpu` set on where bf16 goes to the CPU of a machine without GPU. Other values are left as they
    are (a wrong one is the parser's error)."""
    if str(values.get("bf16")).lower() != AUTO:
        return values
    values = dict(values)
    if _trains_on_gpu(values):
        import torch

        values["bf16"] = bool(torch.cuda.is_bf16_supported())
    else:
        values["bf16"] = bool(cpu_bf16_flags())
        if values["bf16"]:
            values["use_cpu"] = True
    return values


def precision_line(training_args) -> str:
    """One log line at the start of training: the arithmetic the steps use and on what."""
    device = "CPU" if training_args.use_cpu or training_args.device.type == "cpu" else str(training_args.device.type)
    if training_args.bf16:
        flags = cpu_bf16_flags() if device == "CPU" else []
        return f"Precision: bf16 autocast on the {device}" + (f" ({', '.join(flags)})" if flags else "")
    if training_args.fp16:
        return f"Precision: fp16 autocast on the {device}"
    return f"Precision: float32 on the {device}"
