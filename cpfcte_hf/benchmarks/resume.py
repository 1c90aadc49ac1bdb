# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What resuming by content costs: the start of a prediction job over N image files whose masks all exist.

    cpfcte-hf bench resume --images 10000 --output outputs/bench/resume.json

Writes N JPEG photos (--height x --width, synthetic, each file distinct) and a BPM and a CRF mask for each into
--work-dir, then times the start of a job that finds everything done (`prepare_job_dir` + `run_prediction_job` +
`gather_counts` of `cpfcte_hf.prediction.job`, single process), in rounds of four cases:

- masks_only: the check without content keys (`sources=None`): does each mask exist;
- unchanged: content keys recorded, nothing changed: one `stat` per file (size and times), no file is read;
- no_record: masks without `sources.json` (made by an older version): every file is read and hashed once;
- touched: every file's times changed, bytes the same: every file is read and hashed, the new times recorded.

The files stay in the page cache (they were just written): `no_record` and `touched` read from memory, as a resume
soon after a run does; from a cold disk they take as long as reading the photos. Prints one JSON object.
"""

import argparse
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..utils.arguments import BothSpellingsParser, parse_plain_args
from ..utils.fingerprint import record_fingerprint
from .common import machine_description, report_results, summarize, synthetic_image


FINGERPRINT = {"kind": "cpfcte_hf resume benchmark"}


def write_files(directory: Path, count: int, height: int, width: int) -> tuple[list[str], int]:
    """`count` JPEG photos (16 synthetic pictures, each file made distinct by its trailing bytes) and a BPM and a CRF
    mask for each; returns the photo paths and their total size in bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = []
    for _ in range(16):
        stream = io.BytesIO()
        Image.fromarray(synthetic_image(rng, height, width)).save(stream, format="JPEG", quality=90)
        pictures.append(stream.getvalue())
    stream = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(stream, format="PNG")
    mask = stream.getvalue()
    for folder in ("photos", "out/bpm", "out/crf"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    paths, total = [], 0
    for index in range(count):
        data = pictures[index % len(pictures)] + index.to_bytes(8, "little")  # JPEG readers ignore trailing bytes
        path = directory / "photos" / f"{index:06d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
        total += len(data)
        for folder in ("bpm", "crf"):
            (directory / "out" / folder / f"{index:06d}.png").write_bytes(mask)
    return paths, total


def resume_once(dataset, ids: list[str], out: Path, with_sources: bool) -> float:
    """Seconds for the start of a job that finds every image done (the model is never called)."""
    from ..prediction.job import gather_counts, prepare_job_dir, run_prediction_job
    from ..prediction.sources import DatasetSources

    def never(*_):
        raise AssertionError("an image was not found done")

    start = time.perf_counter()
    prepare_job_dir(out, FINGERPRINT, False, [out / "bpm", out / "crf"])
    counts = run_prediction_job(
        ids, never, never, out / "bpm", out / "crf", crf_workers=0, progress=False,
        sources=DatasetSources(dataset) if with_sources else None, record_dir=out,
    )  # fmt: skip
    gather_counts(None, counts)
    seconds = time.perf_counter() - start
    assert counts.already_done == len(ids) and not counts.changed, counts
    return seconds


def touch_all(paths: list[str], offset_ns: int) -> None:
    for path in paths:
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + offset_ns))


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", "--work_dir", dest="work_dir", default="outputs/bench/resume_files")
    parser.add_argument("--keep", action="store_true", help="keep the files (default: deleted at the end)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)

    import datasets
    import torch

    machine = machine_description(torch.device("cpu"))  # the load average before the run
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    paths, total_bytes = write_files(work, args.images, args.height, args.width)
    ids = [Path(p).stem for p in paths]
    dataset = datasets.Dataset.from_dict({"image": paths, "id": ids}).cast_column("image", datasets.Image())
    out = work / "out"
    record_fingerprint(out, FINGERPRINT)  # the masks' settings, as the job that made them would have recorded
    resume_once(dataset, ids, out, with_sources=True)  # records every key (what the job that made the masks records)
    times = {"masks_only": [], "unchanged": [], "no_record": [], "touched": []}
    for round_index in range(args.repeats):
        times["masks_only"].append(resume_once(dataset, ids, out, with_sources=False))
        times["unchanged"].append(resume_once(dataset, ids, out, with_sources=True))
        (out / "sources.json").unlink()
        times["no_record"].append(resume_once(dataset, ids, out, with_sources=True))
        touch_all(paths, (round_index + 1) * 10**9)
        times["touched"].append(resume_once(dataset, ids, out, with_sources=True))
    results = {
        "machine": machine,
        "images": args.images,
        "image_size": [args.height, args.width],
        "photo_bytes_total": total_bytes,
        "seconds": {name: {k: round(v, 3) for k, v in summarize(t).items()} for name, t in times.items()},
    }
    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    report_results(results, args.output)
    return 0
