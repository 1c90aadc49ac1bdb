# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""What both stages' Trainers share: bf16 checked when training starts (so that a GPU recipe prints anywhere), progress
bars closed on every exit, checkpoints converted from older layouts, a stop at the first non-finite loss, and the
recognition of complete checkpoints for `--resume_from_checkpoint last`.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch
from transformers import Trainer
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    get_last_checkpoint,
    sort_checkpoints,
)
from transformers.utils import logging


# What the models take from a batch (batches also carry e.g. `masks`, for the metrics).
MODEL_INPUT_NAMES = ("pixel_values", "labels")


logger = logging.get_logger(__name__)


BF16_OPTIONS = ("bf16", "bf16_full_eval")


def bf16_available(use_cpu: bool = False) -> bool:
    """Whether `TrainingArguments` accepts bf16 here: on the CPU (`use_cpu`), a GPU with bf16, or an XLA device."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return use_cpu or is_torch_bf16_gpu_available() or is_torch_xla_available()


class DeferredPrecisionCheckMixin:
    """
    `TrainingArguments` whose bf16 (`bf16`, `bf16_full_eval`) is not refused while the arguments are built, on a
    machine without bf16, but by `check_precision()`: a GPU recipe's settings can then be printed anywhere
    (`--print_config`), and a command refuses bf16 only after its inputs were checked, in one line that says what
    to pass. The trainers call `check_precision()` before they train, so such arguments never train in float32
    silently. Mixed in before `TrainingArguments`.
    """

    def __post_init__(self):
        deferred = [name for name in BF16_OPTIONS if getattr(self, name)] if not bf16_available(self.use_cpu) else []
        for name in deferred:
            setattr(self, name, False)
        try:
            super().__post_init__()
        finally:
            for name in deferred:
                setattr(self, name, True)  # as asked: printed so, and refused by check_precision()

    def check_precision(self, turn_off: str = "--bf16 false") -> None:
        """Raises `ValueError` (one line, naming `turn_off`, the way to train in float32) where bf16 is asked for and
        this machine has no bf16."""
        asked = [name for name in BF16_OPTIONS if getattr(self, name)]
        if asked and not bf16_available(self.use_cpu):
            raise ValueError(
                f"{' and '.join(asked)} is on (the GPU presets turn it on), but this machine has no GPU with "
                f"bfloat16: pass {turn_off} to train in float32 here."
            )


_CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


@contextlib.contextmanager
def closing_progress_bars(trainer: Trainer):
    """
    Closes `trainer`'s progress bars when the block raises: `Trainer` leaves them open then, and a bar closed by the
    interpreter at exit redraws itself after the command's error line.
    """
    try:
        yield
    except BaseException:
        for callback in trainer.callback_handler.callbacks:
            for name in ("training_bar", "prediction_bar"):
                if getattr(callback, name, None) is not None:
                    getattr(callback, name).close()
                    setattr(callback, name, None)
        raise


class ClosingProgressBarsMixin:
    """`train` and `evaluate` that close the trainer's progress bars when they raise (`closing_progress_bars`), so
    that an error (e.g. `FiniteLossMixin`'s) is the last thing printed."""

    def train(self, *args, **kwargs):
        with closing_progress_bars(self):
            return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with closing_progress_bars(self):
            return super().evaluate(*args, **kwargs)


def is_complete_checkpoint(path: str) -> bool:
    """`Trainer` writes `trainer_state.json` last: a checkpoint without it was cut off while being written."""
    return os.path.isfile(os.path.join(path, "trainer_state.json"))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` (`get_last_checkpoint`) that was written completely: a run killed
    while saving leaves a partial one, which is skipped for the newest complete one before it."""
    if not os.path.isdir(output_dir):
        return None
    last = get_last_checkpoint(output_dir)
    if last is None or is_complete_checkpoint(last):
        return last
    for path in reversed(sort_checkpoints(output_dir)):
        if not _CHECKPOINT_PATTERN.match(os.path.basename(path)):
            continue
        if is_complete_checkpoint(path):
            return path
        logger.warning(f"Skipping {path}: it was not written completely (no trainer_state.json).")
    return None


RESUME_LAST = ("true", "last", "latest")


def resolve_resume_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """
    `--resume_from_checkpoint` of both stages -> the checkpoint to pass to `Trainer.train`: unset / `false` / `none`
    -> None (start fresh); `last` (`latest`, `true`) -> the newest complete checkpoint in `output_dir`
    (`last_complete_checkpoint`); a path -> that checkpoint. A `last` without a complete checkpoint, a path that is not
    a folder, or a checkpoint that was cut off is a clear error naming the folder.
    """
    if resume is None or resume is False or str(resume).lower() in ("", "false", "none"):
        return None
    if resume is True or str(resume).lower() in RESUME_LAST:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no complete checkpoint in {output_dir}.")
        return last
    if not os.path.isdir(resume):
        raise FileNotFoundError(f"--resume_from_checkpoint: {resume} is not a checkpoint directory.")
    if not is_complete_checkpoint(resume):
        raise ValueError(f"--resume_from_checkpoint: {resume} was not written completely (no trainer_state.json).")
    return resume


class ConvertedCheckpointMixin:
    """
    Makes `Trainer` resume from and reload its best checkpoint through `from_pretrained`.

    transformers 5.x saves some models' weights under their original names (for ViT: `encoder.layer.N.attention...`)
    and renames them when `from_pretrained` loads them; `Trainer`'s own loaders read the weight file raw, which
    would leave the encoder of a resumed run, or of `load_best_model_at_end`, silently un-loaded. Here the
    checkpoint goes through `from_pretrained` and is loaded strictly.
    """

    def _load_converted_checkpoint(self, checkpoint: str, model=None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        loaded = type(target).from_pretrained(checkpoint, config=target.config)
        target.load_state_dict(loaded.state_dict(), strict=True)
        logger.info(f"Loaded model weights from {checkpoint}.")

    def _uses_plain_checkpoints(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._uses_plain_checkpoints():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_converted_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._uses_plain_checkpoints():
            return super()._load_best_model()
        logger.info(f"Loading best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric}).")
        self._load_converted_checkpoint(self.state.best_model_checkpoint)


class FiniteLossMixin:
    """
    `compute_loss` that feeds the model only its inputs (`model_input_names`; batches also carry e.g. `masks` for
    the metrics) and stops the run with a clear message, naming the step, when the training loss is NaN or inf.
    """

    model_input_names: tuple[str, ...] = MODEL_INPUT_NAMES

    def model_loss(self, model, inputs):
        """(loss, outputs) of one batch: the model's own loss. Trainers with extra loss terms override this."""
        outputs = model(**{name: inputs[name] for name in self.model_input_names if name in inputs})
        return outputs.loss, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = self.model_loss(model, inputs)
        if model.training and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.state.global_step + 1} (epoch "
                f"{self.state.epoch or 0:.2f}); stopping instead of training on garbage. Lower the learning rate, "
                f"check the inputs for NaN/inf, or resume from the last checkpoint in {self.args.output_dir}."
            )
        return (loss, outputs) if return_outputs else loss
