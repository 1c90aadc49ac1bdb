# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The whole method on the built-in procedural data, on a CPU: `cpfcte-hf run --config demo` plus the demo's table.

    cpfcte-hf demo                                  # what `make demo` runs: outputs/demo/
    cpfcte-hf demo --output_dir /tmp/demo           # any option of `cpfcte-hf run`; --demo_dir is an alias

Writes the run's folders (data/, stage1/, pseudo_labels/, stage2/, eval/, hub/, run_summary.json; see
`cpfcte-hf run --help`) and demo_results.json, and prints the per-class table of both stages.
"""

import sys

from ...workflows.demo import format_demo_results, write_demo_results
from ...workflows.run import run_from_argv
from ...workflows.steps import is_main_process


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    status, summary = run_from_argv(argv, default_preset="demo", prog="cpfcte-hf demo", description=__doc__)
    # A run that stopped ends with its error line, not with a table of what it did not measure; --print_config
    # runs nothing (no summary).
    if status == 0 and summary is not None and is_main_process():  # one table and one file under a launch
        print(format_demo_results(write_demo_results(summary)), flush=True)
    return status
