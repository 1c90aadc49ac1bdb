"""The fingerprint rule: an output directory records what made it; a rerun resumes only with the same settings."""

import json

import pytest
import torch

from cpfcte_hf.utils.fingerprint import (
    FingerprintMismatch,
    check_fingerprint,
    diff_fingerprints,
    read_fingerprint,
    record_fingerprint,
    weights_digest,
)


def test_new_same_changed_and_overwrite(tmp_path):
    settings = {"model_weights": "a" * 64, "size": 960, "crf": {"iterations": 10, "bilateral_sxy": 67.0}}
    assert check_fingerprint(tmp_path, settings) == "new"
    record_fingerprint(tmp_path, settings)
    assert read_fingerprint(tmp_path) == settings
    assert check_fingerprint(tmp_path, json.loads(json.dumps(settings))) == "same"

    changed = {"model_weights": "b" * 64, "size": 480, "crf": {"iterations": 10, "bilateral_sxy": 50.0}, "flip": 1}
    with pytest.raises(FingerprintMismatch) as error:
        check_fingerprint(tmp_path, changed)
    assert error.value.changes == [
        "crf.bilateral_sxy: 67.0 -> 50.0",
        "flip: (not recorded) -> 1",
        "model_weights: aaaaaaaaaaaa -> bbbbbbbbbbbb",
        "size: 960 -> 480",
    ]
    assert "--overwrite" in str(error.value) and "size: 960 -> 480" in str(error.value)
    assert check_fingerprint(tmp_path, changed, overwrite=True) == "overwrite"
    assert diff_fingerprints({"crf": {"a": 1}}, {"crf": None}) == ['crf: {"a":1} -> null']


def test_content_without_a_record_and_a_broken_record_are_refused(tmp_path):
    with pytest.raises(FingerprintMismatch, match="no record"):
        check_fingerprint(tmp_path, {"size": 1}, has_content=True)
    assert check_fingerprint(tmp_path, {"size": 1}, overwrite=True, has_content=True) == "overwrite"
    (tmp_path / "fingerprint.json").write_text("{not json")
    with pytest.raises(ValueError, match="fingerprint.json: unreadable"):
        check_fingerprint(tmp_path, {"size": 1})


def test_weights_digest_follows_the_tensors_not_the_object():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    clone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    clone.load_state_dict(model.state_dict())
    assert weights_digest(model) == weights_digest(clone)
    with torch.no_grad():
        clone[0].weight[0, 0] += 1e-6
    assert weights_digest(model) != weights_digest(clone)
    assert len(weights_digest(model)) == 64


def test_weights_digest_of_bfloat16_weights():
    model = torch.nn.Linear(3, 4).to(torch.bfloat16)
    assert len(weights_digest(model)) == 64
