"""The one-call device benchmark: `scripts/bench_gpu.py --smoke` runs every part's code on the CPU in seconds."""

import json
import math
import os
import subprocess

from tests.utils import PYTHON, subprocess_env


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = [
    "train",
    "device_augmentation",
    "pseudo_label_model",
    "pseudo_label_end_to_end",
    "deeplab",
    "loader",
    "train_compiled",
]


def _run(tmp_path, *extra, missing=()):
    """Runs the script; `missing` packages are made unimportable in it, as on a bare GPU machine."""
    output = tmp_path / "gpu.json"
    env = subprocess_env()
    env["PYTHONPATH"] = REPO  # this checkout's package, as `make bench-gpu` runs it on a machine without an install
    if missing:
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({list(missing)!r}))\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shim), REPO])
    process = subprocess.run(
        [PYTHON, "scripts/bench_gpu.py", "--smoke", "--output", str(output), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return json.loads(output.read_text()), process.stdout


def _numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_smoke_runs_every_part(tmp_path):
    results, stdout = _run(tmp_path)

    assert list(results["parts"]) == PARTS
    for part, result in results["parts"].items():
        assert result["status"] == "ok", (part, result)
    for key in ("date", "torch", "cpu_count", "device"):
        assert key in results["machine"]
    for path, number in _numbers(results):
        assert math.isfinite(number), path

    for part in ("train", "train_compiled"):
        for batch in ("batch_2", "batch_4"):
            run = results["parts"][part][batch]
            for model in ("full", "backbone"):
                assert run[model]["images_per_s"] > 0 and run[model]["repeats"] == 5
                assert run[model]["images_per_s_min"] <= run[model]["images_per_s"] <= run[model]["images_per_s_max"]
            overhead = run["head_overhead"]
            assert overhead["min"] <= overhead["median"] <= overhead["max"]
    model_step = results["parts"]["pseudo_label_model"]
    assert {"batch_1_fp32", "batch_2_fp32", "batch_2_bf16"} <= set(model_step)
    end_to_end = results["parts"]["pseudo_label_end_to_end"]
    assert end_to_end["crf"] and end_to_end["written"] == end_to_end["images"] == 4 and end_to_end["failed"] == 0
    assert end_to_end["projected_voc_train_aug_s"] == 10_582 / end_to_end["images_per_s"]
    loaders = results["parts"]["loader"]["loaders"]
    assert [loader["num_workers"] for loader in loaders] == [0, 1]
    assert all(loader["augment_in_loader"] is False for loader in loaders)
    # Goals are reported, not asserted, and only judged on a GPU run.
    assert len(results["goals"]) == 3 and all(goal["met"] is None for goal in results["goals"])
    assert "SMOKE" in stdout and "head overhead" in stdout


def test_time_budget_skips_parts_with_the_reason(tmp_path, capsys):
    from cpfcte_hf.benchmarks.gpu import main

    output = tmp_path / "gpu.json"
    assert main(["--smoke", "--time-budget", "0", "--parts", "train", "deeplab", "--output", str(output)]) == 0

    results = json.loads(output.read_text())
    assert list(results["parts"]) == ["train", "deeplab"]
    for result in results["parts"].values():
        assert result["status"] == "skipped" and "time budget" in result["reason"]
    assert "skipped" in capsys.readouterr().out


def test_missing_packages_skip_or_degrade_with_the_reason(tmp_path):
    # The GPU machine lacks kornia and pydensecrf: the loader (decode + resize only) still runs, the device
    # augmentation is skipped, and the end-to-end pass runs without the CRF, each with its reason recorded.
    parts = ["device_augmentation", "pseudo_label_end_to_end", "loader"]
    results, stdout = _run(tmp_path, "--parts", *parts, missing=["kornia", "pydensecrf"])

    augmentation, end_to_end, loader = (results["parts"][part] for part in parts)
    assert augmentation["status"] == "skipped" and "kornia" in augmentation["reason"]
    assert end_to_end["status"] == "ok" and end_to_end["crf"] is False and "pydensecrf" in end_to_end["reason"]
    assert end_to_end["written"] == 4
    assert loader["status"] == "ok" and loader["loaders"][0]["images_per_s"] > 0


def test_compare_interleaved_alternates_and_reports_the_spread():
    import time

    from cpfcte_hf.benchmarks.common import compare_interleaved

    calls = []

    def candidate(name, seconds):
        def run():
            calls.append(name)
            time.sleep(seconds)

        return run

    stats = compare_interleaved(
        {"slow": candidate("slow", 0.004), "fast": candidate("fast", 0.001)}, repeats=5, warmup=1, items_per_call=2
    )
    # One warm-up each, then rounds in alternating order: neither always runs after the other.
    assert calls == ["slow", "fast"] + ["slow", "fast", "fast", "slow"] * 2 + ["slow", "fast"]
    for name in ("slow", "fast"):
        assert stats[name]["repeats"] == 5 and len(stats[name]["times_s"]) == 5
        assert stats[name]["min_s"] <= stats[name]["median_s"] <= stats[name]["max_s"]
        assert stats[name]["items_per_s"] == 2 / stats[name]["median_s"]
    ratio = stats["ratios"]["slow/fast"]
    assert ratio["repeats"] == 5 and ratio["min"] <= ratio["median"] <= ratio["max"] and ratio["median"] > 1.5


def test_a_failing_part_records_its_error_and_the_others_run(tmp_path, monkeypatch, capsys):
    import cpfcte_hf.benchmarks.gpu as bench_gpu

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(bench_gpu, "bench_deeplab", broken)
    output = tmp_path / "gpu.json"
    assert bench_gpu.main(["--smoke", "--parts", "deeplab", "device_augmentation", "--output", str(output)]) == 0

    results = json.loads(output.read_text())
    assert results["parts"]["deeplab"]["status"] == "error"
    assert "illegal memory access" in results["parts"]["deeplab"]["error"]
    assert results["parts"]["device_augmentation"]["status"] == "ok"
    assert "illegal memory access" in capsys.readouterr().out
