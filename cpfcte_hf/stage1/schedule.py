# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""Stage 1's two-stage schedule: the learning rate of each stage (`StageLearningRate`), the encoder's parameter
groups, and the callback that switches stage (freezing or unfreezing the encoder) at the right step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from transformers.utils import logging


if TYPE_CHECKING:
    from .trainer import CPFCTETrainer


logger = logging.get_logger(__name__)


STAGE2_DECAYS = ("constant", "linear", "cosine")


class StageLearningRate:
    """
    `LambdaLR` multiplier: `stage1_factor` for the first `stage1_steps` optimizer steps, then 1 (the paper's
    constant stage 2), or a `"linear"` / `"cosine"` decay to 0 over the stage-2 steps up to `total_steps`. With
    `warmup_steps`, a linear ramp from 1/warmup_steps to 1 over the first steps of the run.
    """

    def __init__(
        self,
        stage1_steps: int,
        stage1_factor: float,
        warmup_steps: int = 0,
        stage2_decay: str = "constant",
        total_steps: int | None = None,
    ):
        if stage2_decay not in STAGE2_DECAYS:
            raise ValueError(f"The stage-2 schedule must be one of {STAGE2_DECAYS}, got {stage2_decay!r}.")
        self.stage1_steps = stage1_steps
        self.stage1_factor = stage1_factor
        self.warmup_steps = warmup_steps
        self.stage2_decay = stage2_decay
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.stage1_steps:
            factor = self.stage1_factor
        elif self.stage2_decay == "constant" or not self.total_steps or self.total_steps <= self.stage1_steps:
            factor = 1.0
        else:
            progress = min(1.0, (step - self.stage1_steps) / (self.total_steps - self.stage1_steps))
            factor = 1.0 - progress if self.stage2_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return factor


def encoder_parameter_groups(model, trainable_encoder_blocks: int) -> tuple[list, list]:
    """
    Splits the ViT encoder's parameters into (never trained, trained in stage 2).

    The stage-2 set is the last `trainable_encoder_blocks` blocks plus the final LayerNorm; `-1` means every
    encoder parameter, embeddings included.
    """
    vit = model.vit
    if trainable_encoder_blocks < 0:
        return [], list(vit.parameters())
    layers = model.encoder_layers()
    num_layers = len(layers)
    if trainable_encoder_blocks > num_layers:
        raise ValueError(
            f"`trainable_encoder_blocks={trainable_encoder_blocks}` but the encoder has {num_layers} blocks "
            "(use -1 to train all of it)."
        )
    trained_modules = [model.encoder_final_norm(), *layers[num_layers - trainable_encoder_blocks :]]
    trained = {id(p) for module in trained_modules for p in module.parameters()}
    params = list(vit.parameters())
    return [p for p in params if id(p) not in trained], [p for p in params if id(p) in trained]


class TwoStageScheduleCallback(TrainerCallback):
    """Switches the stage-2 encoder blocks off during stage 1 and on after it (also when resuming mid-run)."""

    def __init__(self, trainer: CPFCTETrainer):
        self.trainer = trainer
        self.stage = None

    def _apply(self, state) -> None:
        trainer = self.trainer
        stage = 1 if state.global_step < trainer.stage1_steps else 2
        if stage == self.stage:
            return
        frozen = stage == 1 and trainer.args.stage1_freeze_encoder
        for param in trainer.stage2_encoder_parameters:
            param.requires_grad_(not frozen)
        if stage == 2 and trainer.args.stage2_fresh_optimizer and 0 < trainer.stage1_steps == state.global_step:
            # A fresh Adam: moments and step counts (hence the bias correction) start again. The optimizer itself
            # is kept, so the learning-rate schedule and DDP/accelerate wrappers stay attached to it.
            trainer.optimizer.state.clear()
            logger.info(f"Step {state.global_step}: stage 2 starts with a fresh optimizer state.")
        if self.stage is not None or state.global_step > 0:
            logger.info(f"Step {state.global_step}: entering training stage {stage}.")
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state)
