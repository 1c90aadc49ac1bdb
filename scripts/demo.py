#!/usr/bin/env python
"""The whole of CPF-CTE on the built-in procedural data, on a CPU: train -> pseudo-label + CRF -> report.

    python scripts/demo.py --config scripts/configs/demo.yaml      # what `make demo` runs

Writes outputs/demo/: data/ (the shapes set in the VOC layout), model/ (the checkpoint: from_pretrained and
pipeline("image-segmentation") load it), pseudo_labels/{bpm,crf}/ (palette PNG masks), pseudo_labels/report/
(metrics.json, per_class_iou.csv/png, overlays/) and demo_results.json. Any field is overridable, as in train.py.
"""

import sys

from cpfcte_hf.cli import parse_args_with_presets
from cpfcte_hf.demo import DemoArguments, run_demo
from cpfcte_hf.trainer import CPFCTETrainingArguments
from cpfcte_hf.training import DataArguments, ModelArguments


def main(argv=None) -> int:
    arguments = parse_args_with_presets(
        (DemoArguments, ModelArguments, DataArguments, CPFCTETrainingArguments), argv, description=__doc__
    )
    try:
        run_demo(*arguments)
    except (OSError, ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
