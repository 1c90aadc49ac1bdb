# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""The stored table of Trainer's options that the front door checks without transformers
(`cpfcte_hf/utils/lazy_options.json`): which commands' `LazyArguments` it covers, and its rewriting.

    python -m cpfcte_hf.cli.options_table     # after a transformers upgrade, or a new field of a Trainer's options
"""

from __future__ import annotations

from ..stage1.arguments import TRAINER_OPTIONS
from ..stage2.arguments import ARGUMENT_TYPES
from ..utils.options import LAZY_TABLE, is_lazy, write_lazy_table


def lazy_targets() -> list[str]:
    """The `LazyArguments` of the commands (stage 1's and stage 2's Trainer options)."""
    return sorted({t.target for t in (TRAINER_OPTIONS, *ARGUMENT_TYPES) if is_lazy(t)})


def stored_facts() -> dict:
    """What the front door needs to know of the installed transformers besides Trainer's options: the architectures
    stage 2's `--model_type` takes (`models.segmenters.segmenter_model_types`)."""
    from ..models.segmenters import segmenter_model_types

    return {"segmenter_model_types": segmenter_model_types()}


def main() -> int:
    written = write_lazy_table(lazy_targets(), stored_facts())
    print(f"{LAZY_TABLE}: {sum(map(len, written['classes'].values()))} options of {len(written['classes'])} classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
