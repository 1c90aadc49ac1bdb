#!/usr/bin/env python
"""Writes the procedural shapes set to disk in the VOC layout (read it back with `load_voc` / `--dataset shapes`).

python scripts/make_shapes.py --out data/shapes --num-train 2000 --num-val 300 --image-size 96
"""

import argparse
import json
import os
import sys


# Run as a file, Python puts this folder first on the import path, where `evaluate.py` and `demo.py` would shadow the
# libraries of those names (the `evaluate` metric library among them): the package is imported from its install.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from cpfcte_hf.data import ShapesConfig, write_shapes_voc
from cpfcte_hf.utils.arguments import BothSpellingsParser, parse_plain_args


def main(argv=None):
    defaults = ShapesConfig()
    parser = BothSpellingsParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", "--data_root", "--output_dir", dest="out", required=True, help="output folder (VOC layout)"
    )
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-classes", type=int, default=defaults.num_classes, help="foreground classes (1-10)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parse_plain_args(parser, argv)
    summary = write_shapes_voc(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        num_classes=args.num_classes,
        seed=args.seed,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
