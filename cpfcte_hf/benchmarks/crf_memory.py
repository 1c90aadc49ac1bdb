# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Time and peak memory of the pseudo-labelling CRF for large photos, without and with `--crf_max_side`.

    cpfcte-hf bench crf_memory --output outputs/bench/crf_memory.json
    cpfcte-hf bench crf_memory --megapixels 0.5 4 --max-sides 0 2048      # 0 = no cap

For each size (4:3 synthetic photos) and cap, a fresh pool of --workers CRF processes refines one photo per worker
at once (VOC model: 21 classes, background + 2 tags non-zero), as `cpfcte-hf label` does after the model;
the masks are restored to the full size. Prints one JSON line per case, then the whole result (see
`cpfcte_hf.benchmarks.common.crf_memory_benchmark`).
"""

import argparse

from ..prediction.pseudo_labels import DEFAULT_CRF_MAX_SIDE
from ..utils.arguments import BothSpellingsParser, parse_plain_args
from .common import crf_memory_benchmark, report_results


def main(argv=None) -> int:
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, nargs="+", default=[0.5, 4, 12, 24])
    parser.add_argument(
        "--max-sides", "--max_sides", dest="max_sides", type=int, nargs="+", default=[0, DEFAULT_CRF_MAX_SIDE]
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num-labels", "--num_labels", dest="num_labels", type=int, default=21)
    parser.add_argument("--present", type=int, default=3, help="non-zero classes (background + tags)")
    parser.add_argument(
        "--skip-uncapped-above",
        "--skip_uncapped_above",
        dest="skip_uncapped_above",
        type=float,
        default=None,
        help="skip the no-cap cases above this many megapixels (they need several GB per worker)",
    )
    parser.add_argument("--output", help="also write the JSON here")
    args = parse_plain_args(parser, argv)
    result = crf_memory_benchmark(
        megapixels=args.megapixels,
        max_sides=[side or None for side in args.max_sides],
        num_workers=args.workers,
        num_labels=args.num_labels,
        present=args.present,
        skip_uncapped_above=args.skip_uncapped_above,
    )
    report_results(result, args.output)
    return 0
