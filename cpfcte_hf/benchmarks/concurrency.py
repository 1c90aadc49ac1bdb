# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Two (or more) `cpfcte-hf label` runs side by side against the same runs one after the other.

    cpfcte-hf bench concurrency --output outputs/bench/concurrency.json
    cpfcte-hf bench concurrency --env GOMP_SPINCOUNT=300000          # GNU OpenMP's own spin, as before issue 19
    cpfcte-hf bench concurrency --env GOMP_SPINCOUNT=10000           # the training commands' short spin
    cpfcte-hf bench concurrency --label-args="--crf_workers 1"        # any `label` option, the same for every run
    cpfcte-hf bench concurrency --python OTHER/bin/python --env PYTHONPATH=OTHER_CHECKOUT
                                                                      # another version (`KEY=` unsets KEY)

Each run is a real `python -m cpfcte_hf label` process pseudo-labelling the shapes val split (--images images at
--image-size px, the demo's sizes) with tags and the CRF into its own output directory (--overwrite: everything is
recomputed each time), default threads and CRF workers. The model is the shapes preset's architecture (the demo's
stage 1: ViT 192 wide, 2 blocks, 8-px patches, inference at 192 px), made by `cpfcte-hf train --config shapes
--max_steps 1` into --work-dir unless --model is given: timing does not depend on the weights. Rounds alternate
(one after the other, side by side, side by side, one after the other, ...) after one untimed warm-up of each;
reported: the median wall seconds of each way, of one run alone, and the ratio side by side / one after the other
per round (1.15 = side by side took 15 % longer in total), with the processes' CPU seconds. Prints one JSON object.
"""

import argparse
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..utils.arguments import BothSpellingsParser, parse_plain_args
from ..utils.openmp import WAIT_MARKER, WAIT_VARIABLES
from .common import machine_description, report_results, summarize


def make_model(work_dir: Path, image_size: int) -> str:
    """The shapes preset's model after one training step (made once, then reused)."""
    model = work_dir / "model"
    if not (model / "config.json").is_file():
        command = [
            sys.executable, "-m", "cpfcte_hf", "train", "--config", "shapes", "--max_steps", "1",
            "--eval_strategy", "no", "--save_strategy", "no", "--output_dir", str(model),
            "--dataset_option", "num_train=32", "num_val=8", f"image_size={image_size}",
            f"cache_dir={work_dir / 'cache'}",
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(model)


def label_command(model: str, out: Path, args) -> list[str]:
    return [
        args.python, "-m", "cpfcte_hf", "label", "--model", model, "--dataset", "shapes", "--split", "val",
        "--dataset_option", "num_train=32", f"num_val={args.images}", f"image_size={args.image_size}",
        f"cache_dir={Path(args.work_dir) / 'cache'}", "--output_dir", str(out), "--no_progress", "--num_overlays",
        "0", "--overwrite", *shlex.split(args.label_args),
    ]  # fmt: skip


def run_batch(commands: list[list[str]], env: dict, side_by_side: bool, cwd: Path) -> dict:
    """Runs `commands` together or one after the other, in `cwd` (so that the package comes from the interpreter's
    installation or PYTHONPATH, not from the current directory); wall seconds and the processes' CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if side_by_side:
        processes = [
            subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd) for c in commands
        ]
        failed = [p.stderr.read().decode()[-2000:] for p in processes if p.wait() != 0]
    else:
        runs = [
            subprocess.run(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd) for c in commands
        ]
        failed = [r.stderr.decode()[-2000:] for r in runs if r.returncode != 0]
    wall = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"a `label` run failed:\n{failed[0]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def compare(commands: list[list[str]], env: dict, repeats: int, cwd: Path) -> dict:
    """Alternating rounds of the runs one after the other and side by side, after a warm-up of each way."""
    run_batch(commands, env, False, cwd)
    run_batch(commands, env, True, cwd)
    rounds = {"one_after_the_other": [], "side_by_side": []}
    for round_index in range(repeats):
        order = [False, True] if round_index % 2 == 0 else [True, False]
        for side_by_side in order:
            name = "side_by_side" if side_by_side else "one_after_the_other"
            rounds[name].append(run_batch(commands, env, side_by_side, cwd))
    result = {}
    for name, batches in rounds.items():
        result[name] = {
            "wall_s": {k: round(v, 2) for k, v in summarize([b["wall_s"] for b in batches]).items()},
            "cpu_s": round(summarize([b["cpu_s"] for b in batches])["median"], 1),
            "walls_s": [round(b["wall_s"], 2) for b in batches],
        }
    ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(rounds["one_after_the_other"], rounds["side_by_side"])]
    result["ratio_side_by_side_to_one_after_the_other"] = {k: round(v, 3) for k, v in summarize(ratios).items()}
    result["one_run_alone_s"] = round(result["one_after_the_other"]["wall_s"]["median"] / len(commands), 2)
    return result


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="label runs side by side")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each way (after one warm-up of each)")
    parser.add_argument("--model", help="a CPF-CTE checkpoint (default: the shapes preset's, made in --work-dir)")
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", default="outputs/bench/concurrency")
    parser.add_argument(
        "--env", nargs="*", default=[], help="KEY=VALUE for the label processes, e.g. OMP_NUM_THREADS=1"
    )
    parser.add_argument("--label-args", "--label_args", dest="label_args", default="", help="extra `label` options")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the label runs (default: this one)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)

    import torch

    work = Path(args.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    args.work_dir = str(work)
    model = os.path.abspath(args.model) if args.model else make_model(work, args.image_size)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if env.pop(WAIT_MARKER, None):  # importing cpfcte_hf here set them: each label run chooses its own, or --env's
        for name in WAIT_VARIABLES:
            env.pop(name, None)
    for key, value in (item.split("=", 1) for item in args.env):
        if value:
            env[key] = value
        else:  # `KEY=` unsets KEY
            env.pop(key, None)
    commands = [label_command(model, work / f"run_{i}", args) for i in range(args.runs)]
    results = {"machine": machine_description(torch.device("cpu")), "runs": args.runs, "images": args.images}
    results.update(image_size=args.image_size, env=args.env, label_args=args.label_args, python=args.python)
    results.update(compare(commands, env, args.repeats, work))
    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    report_results(results, args.output)
    return 0
