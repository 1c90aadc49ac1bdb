# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
r"""A page in the browser to label photos with a model and to review a labelling run (Gradio: the `app` extra).

    pip install 'cpfcte-hf[app]'
    cpfcte-hf app --model runs/cpf-cte-voc                             # label mode: http://127.0.0.1:7860
    cpfcte-hf app --model runs/cpf-cte-voc --stage2 runs/deeplab_voc    # untagged photos go through stage 2
    cpfcte-hf app --model runs/cpf-cte-voc --review pseudo/voc_train    # and review that `label` output

Label mode: upload photos, tick the classes in them, get the masks (overlay, class scores, mask PNGs and a zip).
Review mode: the output directory's images worst first; Accept / Reject / Retag each. Decisions go to
OUTPUT_DIR/review.json (rejected images are left out by `train-deeplab`); a retag relabels the image with its new tags
(the run's own settings, the same --model) and rewrites its masks. Nothing else in OUTPUT_DIR changes.

Safe by default: the page listens on 127.0.0.1 (--host 0.0.0.0 to reach it from other machines), opens no public
share link unless --share, sends no analytics, and serves no file of the disk except, with --review, those under
OUTPUT_DIR. Uploads: --max_files photos per request, each at most --max_megabytes and --max_megapixels.
Exit status: 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM (the server closed, its temporary folder removed); 2 bad
arguments (no Gradio, a folder that is no checkpoint, a review directory that is no labelling output), with one line
saying which.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ...utils.arguments import parse_args_with_presets, print_error, require


@dataclass
class AppArguments:
    model: str | None = field(default=None, metadata={"help": "Stage-1 CPF-CTE checkpoint folder or Hub id."})
    stage2: str | None = field(
        default=None, metadata={"help": "Stage-2 DeepLab-v2 checkpoint: labels untagged photos."}
    )
    review: str | None = field(default=None, metadata={"help": "A `cpfcte-hf label` output directory to review."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=7860, metadata={"help": "Port to listen on."})
    share: bool = field(default=False, metadata={"help": "Also open a public gradio.live share link."})
    max_megabytes: float = field(default=25.0, metadata={"help": "Largest upload, per file, in MB."})
    max_megapixels: float = field(default=40.0, metadata={"help": "Largest photo, width x height, in megapixels."})
    max_files: int = field(default=16, metadata={"help": "Photos per request."})
    device: str | None = field(default=None, metadata={"help": "Default: cpu (cuda when available)."})


def parse_arguments(argv=None):
    return parse_args_with_presets((AppArguments,), argv, description=__doc__, command="app", prog="cpfcte-hf app")


def prepare(args):
    """The page of `args`, after every input was checked: `(demo, review session or None)`.

    Raises:
        AppInputError: no Gradio, a bad model folder, a review directory that is no labelling output.
    """
    from ...app import UploadLimits, build_app, import_gradio, load_app_models
    from ...app.review_mode import ReviewSession

    import_gradio()  # before the model loads: a missing extra is the first thing said
    limits = UploadLimits(
        max_bytes=int(args.max_megabytes * (1 << 20)),
        max_pixels=int(args.max_megapixels * 1e6),
        max_files=args.max_files,
    )
    review = ReviewSession(args.review) if args.review else None  # cheap: checked before the weights load
    models = load_app_models(args.model, args.stage2, device=args.device)
    if review is not None:
        review.models = models
    return build_app(models, review=review, limits=limits), review


def main(argv=None) -> int:
    (args,) = parse_arguments(argv)
    require(args, "model")
    from ...app import AppInputError

    try:
        demo, review = prepare(args)
    except (AppInputError, OSError, ValueError) as error:
        print_error(error)
        return 2
    print(
        f"cpfcte-hf app: http://{args.host}:{args.port} (Ctrl-C to stop)" + (" and a share link" if args.share else "")
    )
    return serve(demo, args, review)


def serve(demo, args, review) -> int:
    """Serves until SIGINT or SIGTERM, then closes the server (its temporary folder goes at exit): 130 / 143."""
    import time

    from ...app import launch_app
    from ...utils.interrupts import interrupt_exit_code, stop_on_signals

    with stop_on_signals():
        try:
            launch_app(demo, host=args.host, port=args.port, share=args.share, review=review, block=False)
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt as error:
            print(f"cpfcte-hf app: stopped ({error or 'interrupted'}).", file=sys.stderr)
            return interrupt_exit_code(error)
        except OSError as error:  # e.g. the port is taken
            print_error(error)
            return 2
        finally:
            demo.close()
