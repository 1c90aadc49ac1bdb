"""`bf16: auto` in a preset: bf16 where the processor has bfloat16 instructions, float32 elsewhere, resolved when the
preset's values reach a command, so that what the command prints and records is the precision it trains with."""

import pytest
import torch

from cpfcte_hf.cli.commands import train as train_command
from cpfcte_hf.stage2 import arguments as stage2_arguments
from cpfcte_hf.utils import precision
from cpfcte_hf.utils.precision import cpu_bf16_flags, resolve_auto_bf16


EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\nprocessor\t: 1\n"
XEON = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
LAPTOP = "flags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def write(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", str(path))

    return write


def test_the_bf16_instruction_sets_are_read_from_cpuinfo(cpuinfo, tmp_path):
    cpuinfo(EPYC)
    assert cpu_bf16_flags() == ["avx512_bf16"]
    cpuinfo(XEON)
    assert cpu_bf16_flags() == ["avx512_bf16", "amx_bf16"]
    cpuinfo(LAPTOP)
    assert cpu_bf16_flags() == []
    assert cpu_bf16_flags(str(tmp_path / "no such file")) == []  # not Linux: float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="without use_cpu, auto asks the GPU here")
@pytest.mark.parametrize("text, expected", [(EPYC, True), (XEON, True), (LAPTOP, False)])
def test_auto_is_resolved_for_the_cpu_and_other_values_are_left_alone(cpuinfo, text, expected):
    cpuinfo(text)
    assert resolve_auto_bf16({"bf16": "auto"}) == ({"bf16": True, "use_cpu": True} if expected else {"bf16": False})
    assert resolve_auto_bf16({"bf16": "AUTO", "use_cpu": True}) == {"bf16": expected, "use_cpu": True}
    for value in (True, False, "maybe", None):
        assert resolve_auto_bf16({"bf16": value}) == {"bf16": value}


@pytest.mark.parametrize("use_cpu", [True, "true", "yes", 1, "1"])
def test_use_cpu_in_any_spelling_the_parser_takes_sends_auto_to_the_cpu_beside_a_gpu(cpuinfo, monkeypatch, use_cpu):
    """On a machine with a GPU without bf16 (the GPU stood in for: none is here), `use_cpu` read as the parser reads a
    flag (`--override use_cpu=1` is the number 1) makes `auto` ask the CPU; without it, the GPU."""
    cpuinfo(EPYC)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_auto_bf16({"bf16": "auto", "use_cpu": use_cpu})["bf16"] is True
    assert resolve_auto_bf16({"bf16": "auto", "use_cpu": False})["bf16"] is False
    assert resolve_auto_bf16({"bf16": "auto"})["bf16"] is False


@pytest.mark.parametrize("text, expected", [(EPYC, True), (LAPTOP, False)])
def test_both_stages_parse_a_preset_with_auto_into_the_precision_of_this_cpu(cpuinfo, tmp_path, text, expected):
    """Through each command's real parse (transformers' `TrainingArguments`, which refuses bf16 on a CPU without
    `use_cpu`): the demo preset's own `bf16: auto` in stage 1 and in its `train_deeplab:` section."""
    cpuinfo(text)
    *_, training_args = train_command.parse_arguments(["--config", "demo", "--output_dir", str(tmp_path / "s1")])
    assert (training_args.bf16, training_args.use_cpu) == (expected, True)  # the demo's stage 1 sets use_cpu
    *_, deeplab_args = stage2_arguments.parse_arguments(
        ["--config", "demo", "--output_dir", str(tmp_path / "s2")], prog="cpfcte-hf train-deeplab"
    )
    assert deeplab_args.bf16 is expected
    if not torch.cuda.is_available():
        assert deeplab_args.use_cpu is expected  # bf16 on the CPU of a machine without GPU needs use_cpu
    deeplab_args.check_precision()  # accepted as resolved: no refusal to train
    # The command line still wins over the preset.
    *_, training_args = train_command.parse_arguments(["--config", "demo", "--output_dir", "o", "--bf16", "false"])
    assert training_args.bf16 is False
