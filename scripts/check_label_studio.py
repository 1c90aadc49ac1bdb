# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""
Walks a `cpfcte-hf export --format labelstudio` folder through a real Label Studio and checks that what comes back is
the masks: the tasks and their pre-annotations are imported with the exported labelling interface, every image is
served from the export folder byte for byte, each pre-annotation is accepted as it is (an annotation with the same
regions, as a person clicking "submit" makes it), and Label Studio's own brush export (`BRUSH_TO_PNG`) is rebuilt into
one mask per image and compared with the exported masks pixel for pixel (ignore pixels, 255, are in no region and
come back as background).

    python -m venv /tmp/lsenv && /tmp/lsenv/bin/pip install label-studio   # Label Studio itself, kept apart
    cpfcte-hf export --labels outputs/demo/stage2 --format labelstudio --output_dir /tmp/ls_val
    python scripts/check_label_studio.py --export /tmp/ls_val --split val \
        --masks outputs/demo/stage2/predictions/val/ms_crf --label_studio /tmp/lsenv/bin/label-studio

It starts Label Studio on a free local port with a fresh data folder (removed afterwards) and stops it, and every
process it started, when it ends. Exit status 0 when every mask came back equal, 1 otherwise (the differing images
are listed). Not part of the test suite: Label Studio is a server of several hundred MB of dependencies.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cpfcte_hf.models.cpfcte.visualization import read_mask


EXPORTED_PNG = re.compile(r"^task-(\d+)-annotation-(\d+)-by-(\d+)-label-(.+)-(\d+)\.png$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_label_studio(executable: str, export_dir: Path, data_dir: Path, port: int, token: str):
    env = dict(os.environ)
    env.update(
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(export_dir),
    )
    command = [executable, "start", "--no-browser", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--username", "check@example.com", "--password", secrets.token_hex(8), "--user-token", token]
    command += ["--enable-legacy-api-token"]
    log = open(data_dir.parent / "label_studio.log", "wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Stops Label Studio and every process of its session."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until_up(client: httpx.Client, process: subprocess.Popen, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"label-studio exited with status {process.returncode} while starting.")
        try:
            if client.get("/version").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise SystemExit(f"label-studio did not answer within {seconds:.0f} s.")


def rebuild_masks(archive: bytes, tasks: dict[int, dict], names: list[str]) -> dict[str, np.ndarray]:
    """One class-id mask per exported image from Label Studio's brush export (one PNG per task, annotation, label)."""
    masks: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        for member in zipped.namelist():
            match = EXPORTED_PNG.match(Path(member).name)
            if match is None:
                raise SystemExit(f"Label Studio's export holds {member!r}, not a brush PNG of a task.")
            task = tasks[int(match.group(1))]
            binary = np.asarray(Image.open(io.BytesIO(zipped.read(member))).convert("L")) > 127
            image_id = task["data"]["cpfcte_id"]
            mask = masks.setdefault(image_id, np.zeros(binary.shape, np.uint8))
            if mask[binary].any():
                raise SystemExit(f"{member}: overlaps another region of {image_id}.")
            mask[binary] = names.index(match.group(4))
    return masks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="A `cpfcte-hf export --format labelstudio` folder.")
    parser.add_argument("--split", required=True, help="The split of its labelstudio/<split>.json.")
    parser.add_argument("--masks", required=True, help="The folder of the exported masks (<id>.png).")
    parser.add_argument("--label_studio", default="label-studio", help="The label-studio executable.")
    args = parser.parse_args(argv)
    if shutil.which(args.label_studio) is None:
        parser.error(f"--label_studio {args.label_studio}: not an executable (pip install label-studio, in a venv).")
    export_dir = Path(args.export).resolve()
    tasks_file = export_dir / "labelstudio" / f"{args.split}.json"
    if not tasks_file.is_file():
        parser.error(f"{tasks_file}: not found; --export takes a `cpfcte-hf export --format labelstudio` folder.")
    summary = json.loads((export_dir / "export_summary.json").read_text())
    names = summary["class_names"]
    exported = json.loads(tasks_file.read_text())
    work = Path(tempfile.mkdtemp(prefix="check_label_studio-"))
    token = secrets.token_hex(20)
    port = free_port()
    started = time.perf_counter()
    process = start_label_studio(args.label_studio, export_dir, work / "data", port, token)
    timings = {}
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {token}"}, timeout=600
        )
        wait_until_up(client, process)
        timings["start"] = time.perf_counter() - started
        config = (export_dir / "labelstudio" / "config.xml").read_text()
        project = client.post("/api/projects", json={"title": f"check {args.split}", "label_config": config})
        project.raise_for_status()
        project_id = project.json()["id"]
        storage = {"project": project_id, "path": str(export_dir / "images" / args.split), "use_blob_urls": False}
        client.post("/api/storages/localfiles", json=storage).raise_for_status()
        mark = time.perf_counter()
        imported = client.post(f"/api/projects/{project_id}/import", json=exported)
        imported.raise_for_status()
        timings["import"] = time.perf_counter() - mark
        print(f"imported: {imported.json()['task_count']} tasks, {imported.json()['prediction_count']} predictions")
        listed = client.get("/api/tasks", params={"project": project_id, "page_size": 100000, "fields": "all"})
        tasks = {task["id"]: task for task in listed.raise_for_status().json()["tasks"]}
        mark = time.perf_counter()
        served_equal = 0
        for task in tasks.values():
            address = task["data"]["image"]
            response = client.get(address)
            local = export_dir / httpx.URL(address).params["d"]
            served_equal += response.status_code == 200 and response.content == local.read_bytes()
            result = task["predictions"][0]["result"]
            client.post(f"/api/tasks/{task['id']}/annotations", json={"result": result}).raise_for_status()
        timings["serve_and_accept"] = time.perf_counter() - mark
        mark = time.perf_counter()
        archive = client.get(f"/api/projects/{project_id}/export", params={"exportType": "BRUSH_TO_PNG"})
        archive.raise_for_status()
        timings["export"] = time.perf_counter() - mark
        rebuilt = rebuild_masks(archive.content, tasks, names)
    finally:
        stop(process)
        shutil.rmtree(work, ignore_errors=True)
    differing = []
    for task in exported:
        image_id = task["data"]["cpfcte_id"]
        mask = read_mask(Path(args.masks) / f"{image_id}.png")
        expected = np.where(mask == 255, 0, mask)
        got = rebuilt.get(image_id, np.zeros_like(mask))
        if got.shape != mask.shape or not np.array_equal(got, expected):
            differing.append(image_id)
    print(f"images served byte for byte: {served_equal} of {len(tasks)}")
    print(f"masks back from Label Studio's brush export equal to the exported masks: "
          f"{len(exported) - len(differing)} of {len(exported)}")  # fmt: skip
    print("seconds: " + ", ".join(f"{key} {value:.1f}" for key, value in timings.items()))
    if differing:
        print("differing: " + ", ".join(differing[:20]) + (" ..." if len(differing) > 20 else ""))
    return 0 if not differing and served_equal == len(tasks) == len(exported) else 1


if __name__ == "__main__":
    sys.exit(main())
