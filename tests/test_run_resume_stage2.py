"""`cpfcte-hf run` resumes both trainings from their last complete checkpoint after a kill (the VOC-scale rehearsal
found stage 2 starting again from step 0)."""

import json
from pathlib import Path

import pytest

from cpfcte_hf.workflows import run as run_module


@pytest.mark.parametrize("name, command", [("stage1", "train"), ("stage2", "train-deeplab")])
def test_a_killed_training_step_resumes_from_its_last_complete_checkpoint(tmp_path, monkeypatch, name, command):
    directory = tmp_path / name
    (directory / "checkpoint-2").mkdir(parents=True)
    (directory / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (directory / "checkpoint-4").mkdir()  # cut off while being written: no trainer_state.json
    seen = []
    monkeypatch.setattr(run_module, "step_settings", lambda command, argv, run_dir: {"argv": list(argv)})
    monkeypatch.setattr("cpfcte_hf.cli.main.run_command", lambda command, argv: seen.append(list(argv)) or 0)
    step = run_module.Step(name, command, ["--output_dir", str(directory)], directory, ["model.safetensors"])
    args = run_module.RunArguments(output_dir=str(tmp_path))
    entry = run_module.execute_step(step, args, Path(tmp_path), {}, {})
    assert entry["status"] == "ran"
    assert seen == [["--output_dir", str(directory), "--resume_from_checkpoint", "last"]]
