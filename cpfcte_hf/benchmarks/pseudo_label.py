# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Throughput of pseudo-labelling, model step and CRF step measured separately, serial CRF against the pool.

    cpfcte-hf bench pseudo_label                          # CPU: ViT-B/16 at 960, 500x375 images
    cpfcte-hf bench pseudo_label --device cuda --model-images 20

Model step: `predict_class_probabilities` for one 500x375 image (resize to --size, forward of a randomly initialised
ViT-B/16 CPF-CTE, softmax, class masking, max normalisation, bilinear upsampling), batch 1, timed --repeats times.
CRF step: the dense CRF with SPEC defaults on 500x375 probability maps, serially in this process and over `CRFPool`
(default: one worker per available CPU), interleaved (serial, pool, pool, serial, ...) over --repeats rounds, with
the image labels (background + 2 classes: the CRF runs over 3 labels) and without (all 21). Every rate is the median
over the repeats, with its min, max and spread. Weights are random: timing does not depend on them. Prints one JSON
object. (For a GPU machine, `scripts/bench_gpu.py` measures all of pseudo-labelling in one run.)
"""

import argparse
import os
import resource
import time

import numpy as np
import torch

from ..models.cpfcte.configuration_cpfcte import CPFCTEConfig, vit_b16_384_config
from ..models.cpfcte.crf import CRFPool, DenseCRFConfig, crf_mask, default_num_workers
from ..models.cpfcte.inference import predict_class_probabilities
from ..models.cpfcte.modeling_cpfcte import CPFCTEForWeaklySupervisedSegmentation
from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import (
    compare_interleaved,
    machine_description,
    report_results,
    synthetic_image,
    synthetic_probabilities,
    throughput,
)


def rates(timing: dict, images: int) -> dict:
    """Images/s from `compare_interleaved` seconds per call of `images` images: median, min, max, spread."""
    return {
        "images": images,
        **{key: round(value, 4) for key, value in throughput(timing, images).items()},
        "spread": round(timing["spread"], 3),
        "repeats": timing["repeats"],
    }


def _parser() -> argparse.ArgumentParser:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=960, help="inference resolution")
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--num-labels", type=int, default=21)
    parser.add_argument("--model-images", type=int, default=1, help="model steps per repeat (after one warm-up)")
    parser.add_argument("--crf-images", type=int, default=4, help="images per repeat, serial and pooled")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (interleaved for the CRF)")
    parser.add_argument("--crf-workers", type=int, default=None, help="pool size (default: CPUs available)")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", help="also write the JSON here")
    return parser


def main(argv=None) -> int:
    args = parse_plain_args(_parser(), argv)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    height, width, num_labels = args.height, args.width, args.num_labels
    images = [synthetic_image(rng, height, width) for _ in range(max(args.model_images + 1, args.crf_images))]
    results = {"machine": machine_description(device), "image_size": [height, width], "inference_size": args.size}
    # The CPU may be shared: the load before and after says how contended the numbers are.
    results["machine"]["load_average_1m_before"] = round(os.getloadavg()[0], 2)
    if not args.skip_model:
        results["model_step"] = _model_step(args, device, images[1 : args.model_images + 1])
    workers = args.crf_workers or default_num_workers()
    results["crf_workers"] = workers
    for name, classes in (("crf_3_labels", [0, 8, 15]), ("crf_21_labels", list(range(num_labels)))):
        items = [
            (i, images[i], synthetic_probabilities(rng, classes, num_labels, height, width))
            for i in range(args.crf_images)
        ]
        results[name] = _crf_serial_against_pool(items, workers, args.repeats)
    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    report_results(results, args.output)
    return 0


def _model_step(args, device: torch.device, window: list) -> dict:
    """Images/s of `predict_class_probabilities` on the images of `window`, one at a time."""
    torch.manual_seed(0)
    config = CPFCTEConfig(backbone_config=vit_b16_384_config(), num_labels=args.num_labels)
    model = CPFCTEForWeaklySupervisedSegmentation(config).to(device).eval()
    labels = torch.zeros(1, args.num_labels)
    labels[0, [0, 8, 15]] = 1.0

    def model_step(image):
        maps, _ = predict_class_probabilities(model, [image], labels, size=args.size)
        return maps[0].argmax(0)

    timing = compare_interleaved(
        {"model": lambda: [model_step(image) for image in window]}, device, repeats=args.repeats, warmup=1
    )
    return rates(timing["model"], args.model_images) | {"batch_size": 1}


def _crf_serial_against_pool(items: list, workers: int, repeats: int) -> dict:
    """The dense CRF on `items` serially in this process and over a `CRFPool` of `workers`, interleaved: rates, the
    pool's speed-up, and the CPU seconds per image of each (the pool's counted in its workers)."""
    config = DenseCRFConfig()
    serial_cpu, serial_masks, pooled_masks = [], {}, {}

    def serial():
        start = time.process_time()
        serial_masks.update({key: crf_mask(image, probabilities, config) for key, image, probabilities in items})
        serial_cpu.append(time.process_time() - start)

    # CPU seconds of the workers (counted once they exit) say whether the pool adds overhead per image,
    # which wall time on a shared CPU cannot.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CRFPool(config, num_workers=workers) as pool:
        list(pool.map(items[:workers]))  # start the workers (and load the library) outside the timing

        def pooled():
            pooled_masks.update({result.key: result.mask for result in pool.map(items)})

        timing = compare_interleaved({"serial": serial, "pool": pooled}, repeats=repeats, warmup=1, baseline="pool")
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    assert all(np.array_equal(serial_masks[k], pooled_masks[k]) for k in serial_masks), "pool and serial differ"
    pooled_images = len(items) * (timing["pool"]["repeats"] + 1) + workers
    result = {
        "serial": rates(timing["serial"], len(items)),
        "pool": rates(timing["pool"], len(items)),
        "pool_speedup": {key: round(value, 2) for key, value in timing["ratios"]["serial/pool"].items()},
    }
    result["serial"]["cpu_s_per_image"] = round(sum(serial_cpu) / (len(items) * len(serial_cpu)), 3)
    result["pool"]["cpu_s_per_image"] = round(pool_cpu / pooled_images, 3)
    return result
