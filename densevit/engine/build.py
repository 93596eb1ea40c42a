"""From a config or a checkpoint to a task and a model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from densevit.config import ExperimentConfig, build_config
from densevit.engine.checkpoint import load_checkpoint, model_state
from densevit.engine.runtime import resolve_device
from densevit.engine.task import TASKS, Task
from densevit.errors import UserInputError
from densevit.weights import load_pretrained_model, load_state


def build_task(cfg: ExperimentConfig) -> Task:
    """The registered task named by ``cfg.task``, built from ``cfg``."""
    return TASKS.get(cfg.task)(cfg)


def build_model(task: Task) -> nn.Module:
    """The task's model, with the weights of ``model.pretrained`` when the config names a file."""
    model = task.build_model()
    if task.cfg.model.pretrained:
        load_pretrained_model(model, task.cfg.model.pretrained)
    return model


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Load the checkpoint's model state into ``model``; every tensor must fit."""
    load_state(model, model_state(checkpoint, path), path, strict=True)


def build_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Task, nn.Module]:
    """The task and the trained model (eval mode, on ``device``) that a checkpoint describes."""
    checkpoint = load_checkpoint(path)
    data = checkpoint.get("config")
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: field 'config': missing; not a densevit training checkpoint")
    cfg = build_config(data, where=f"{path} (stored config)")
    cfg.model.pretrained = None  # the checkpoint holds the weights; the original file may be gone
    task = build_task(cfg)
    model = task.build_model()
    load_model_weights(model, checkpoint, path)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return task, model.to(device).eval()
