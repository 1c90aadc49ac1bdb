# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Throughput of pseudo-labelling, model step and CRF step measured separately, serial CRF against the pool.

    cpfcte-hf bench pseudo_label                          # CPU: ViT-B/16 at 960, 500x375 images
    cpfcte-hf bench pseudo_label --device cuda --model-images 20

Model step: `predict_class_probabilities` for one 500x375 image (resize to --size, forward of a randomly initialised
ViT-B/16 CPF-CTE, softmax, class masking, max normalisation, bilinear upsampling), batch 1. CRF step: the dense CRF
with SPEC defaults on 500x375 probability maps, serially in this process and over `CRFPool` (default: one worker per
available CPU), with the image labels (background + 2 classes: the CRF runs over 3 labels) and without (all 21).
Weights are random: timing does not depend on them. Prints one JSON object.
"""

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from cpfcte_hf import CPFCTEConfig, CPFCTEForWeaklySupervisedSegmentation, vit_b16_384_config
from cpfcte_hf.benchmarking import machine_description
from cpfcte_hf.cli import parse_plain_args
from cpfcte_hf.crf import CRFPool, DenseCRFConfig, crf_mask, default_num_workers
from cpfcte_hf.pipelines import predict_class_probabilities


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth background with two coloured blobs: CRF cost depends a little on the image content."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90)], -1).astype(np.float32)
    for _ in range(2):
        cy, cx, r = rng.integers(50, height - 50), rng.integers(50, width - 50), rng.integers(30, 90)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def synthetic_probabilities(rng: np.random.Generator, classes: list[int], num_labels: int, height: int, width: int):
    """Smooth random (C, H, W) maps that are zero outside `classes` (as after class masking)."""
    coarse = rng.random((len(classes), 24, 32)).astype(np.float32) ** 3
    maps = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], size=(height, width), mode="bilinear", align_corners=True
    )[0].numpy()
    probabilities = np.zeros((num_labels, height, width), np.float32)
    probabilities[classes] = maps / maps.sum(0, keepdims=True)
    return probabilities


def rate(count: int, seconds: float) -> dict:
    return {"images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=960, help="inference resolution")
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--num-labels", type=int, default=21)
    parser.add_argument("--model-images", type=int, default=2, help="timed model steps (after one warm-up)")
    parser.add_argument("--crf-images", type=int, default=12)
    parser.add_argument("--crf-workers", type=int, default=None, help="pool size (default: CPUs available)")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)

    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    height, width, num_labels = args.height, args.width, args.num_labels
    images = [synthetic_image(rng, height, width) for _ in range(max(args.model_images + 1, args.crf_images))]
    results = {"machine": machine_description(device), "image_size": [height, width], "inference_size": args.size}
    # The CPU may be shared: the load before and after says how contended the numbers are.
    results["machine"]["load_average_1m_before"] = round(os.getloadavg()[0], 2)

    if not args.skip_model:
        torch.manual_seed(0)
        config = CPFCTEConfig(backbone_config=vit_b16_384_config(), num_labels=num_labels)
        model = CPFCTEForWeaklySupervisedSegmentation(config).to(device).eval()
        labels = torch.zeros(1, num_labels)
        labels[0, [0, 8, 15]] = 1.0

        def model_step(image):
            maps, _ = predict_class_probabilities(model, [image], labels, size=args.size)
            return maps[0].argmax(0)

        model_step(images[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for image in images[1 : args.model_images + 1]:
            model_step(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results["model_step"] = rate(args.model_images, time.perf_counter() - start)
        results["model_step"]["batch_size"] = 1
        del model

    workers = args.crf_workers or default_num_workers()
    results["crf_workers"] = workers
    config = DenseCRFConfig()
    for name, classes in (("crf_3_labels", [0, 8, 15]), ("crf_21_labels", list(range(num_labels)))):
        items = [
            (i, images[i], synthetic_probabilities(rng, classes, num_labels, height, width))
            for i in range(args.crf_images)
        ]
        crf_mask(items[0][1], items[0][2], config)  # warm-up (library load)
        start, cpu_start = time.perf_counter(), time.process_time()
        serial = {key: crf_mask(image, probabilities, config) for key, image, probabilities in items}
        serial_time, serial_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        # CPU seconds of the workers (counted once they exit) say whether the pool adds overhead per image,
        # which wall time on a shared CPU cannot.
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with CRFPool(config, num_workers=workers) as pool:
            list(pool.map(items[:workers]))  # start the workers outside the timing
            start = time.perf_counter()
            pooled = {result.key: result.mask for result in pool.map(items)}
            pool_time = time.perf_counter() - start
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        pool_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        assert all(np.array_equal(serial[k], pooled[k]) for k in serial), "pool and serial masks differ"
        results[name] = {"serial": rate(len(items), serial_time), "pool": rate(len(items), pool_time)}
        results[name]["serial"]["cpu_s_per_image"] = round(serial_cpu / len(items), 3)
        results[name]["pool"]["cpu_s_per_image"] = round(pool_cpu / (len(items) + workers), 3)
        results[name]["pool_speedup"] = round(serial_time / pool_time, 2)

    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    return 0
