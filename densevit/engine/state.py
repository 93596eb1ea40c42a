"""What a training checkpoint holds to continue exactly, and putting it back.

With an EMA of the weights (``train.ema``) the checkpoint's ``model`` is the average (what
validation scored, and what ``predict``/``evaluate``/``model.pretrained`` read), the weights
being trained are ``train_model`` and the average's position is ``ema_updates``. Without
EMA neither extra key is written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densevit import distributed as dist
from densevit.engine.build import load_model_weights
from densevit.engine.checkpoint import model_state
from densevit.engine.ema import ModelEMA
from densevit.engine.runtime import rng_state, set_rng_state
from densevit.errors import UserInputError
from densevit.io import json_safe

RESUME_FIELDS = ("optimizer", "scheduler", "step", "epoch", "rng")


@dataclass
class LoopState:
    """Where the loop is: what a checkpoint needs to continue exactly."""

    epoch: int = 0  # the epoch being trained (0-based)
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed (by this process)
    step: int = 0  # optimiser steps done
    best: float | None = None  # best value of train.best_metric so far
    last_eval_step: int = -1  # the step of the latest evaluation
    metrics: dict[str, Any] = field(default_factory=dict)  # its metrics (JSON-ready)

    def improve_best(self, value: float, mode: str) -> bool:
        """Keep ``value`` as the best when finite and better (``mode``: ``max`` or ``min``); says whether it was."""
        better = self.best is None or (value > self.best if mode == "max" else value < self.best)
        if math.isfinite(value) and better:
            self.best = value
            return True
        return False


def capture(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, state: LoopState,
            config: dict[str, Any], class_names: list[str], world: int, ema: ModelEMA | None = None) -> dict[str, Any]:
    """The checkpoint dict of a run (see :mod:`densevit.engine.checkpoint`); gathers every
    process's RNG state, so every process must call it. With ``ema``, ``model`` holds its
    averaged weights and ``train_model`` the model's own (see the module docstring)."""
    extra = {} if ema is None else {"train_model": model.state_dict(), "ema_updates": ema.updates}
    return {
        "model": (model if ema is None else ema.module).state_dict(),
        **extra,
        "config": config,
        "class_names": list(class_names),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "step": state.step,
        "best": state.best,
        "last_eval_step": state.last_eval_step,
        # Plain numbers only (numpy scalars would make weights_only loading refuse the file).
        "metrics": json_safe(state.metrics),
        "world_size": world,
        "rng": dist.all_gather_objects(rng_state()),
    }


def weights_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ``best.pth`` keeps of a :func:`capture`: weights, config, names, position and metrics
    (a quarter of the size of a resumable checkpoint with AdamW's two moments)."""
    keep = ("model", "config", "class_names", "epoch", "step", "best", "metrics")
    return {key: checkpoint[key] for key in keep if key in checkpoint}


def restore(checkpoint: dict[str, Any], path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: Any, world: int, rank: int, ema: ModelEMA | None = None) -> LoopState:
    """Put a :func:`capture` back: weights (and the EMA's), optimiser, schedule, scaler and this
    process's RNG states; returns the loop's position. A checkpoint that cannot continue this
    run is a ``UserInputError`` naming the file and the field.

    The model always gets the trained weights (``train_model`` when the checkpoint has it,
    else ``model``), whether or not this run keeps an EMA. ``ema`` gets the checkpoint's
    average; from a checkpoint written without EMA it starts again from the resumed weights."""
    for key in RESUME_FIELDS:
        if key not in checkpoint:
            raise UserInputError(f"{path}: field {key!r} missing: not a resumable training checkpoint")
    if checkpoint.get("world_size", world) != world:
        raise UserInputError(
            f"{path}: written by {checkpoint['world_size']} processes; resume with the same number "
            f"(now {world}) so that every process continues its own shard"
        )
    if "train_model" in checkpoint:
        load_model_weights(model, {"model": checkpoint["train_model"]}, f"{path}: field 'train_model'")
    else:
        load_model_weights(model, checkpoint, path)
    if ema is not None:
        ema.load_state_dict(model_state(checkpoint, path), int(checkpoint.get("ema_updates", 0)))
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    except (ValueError, KeyError) as err:
        raise UserInputError(f"{path}: field 'optimizer'/'scheduler' does not fit this config: {err}") from None
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"][rank])
    return LoopState(
        epoch=int(checkpoint["epoch"]),
        batch_in_epoch=int(checkpoint.get("batch_in_epoch", 0)),
        step=int(checkpoint["step"]),
        best=checkpoint.get("best"),
        last_eval_step=int(checkpoint.get("last_eval_step", -1)),
        metrics=dict(checkpoint.get("metrics") or {}),
    )
