"""From a config file or a checkpoint to a task and a model."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from densevit.config import ExperimentConfig, apply_overrides, build_config, read_yaml_with_bases
from densevit.engine.checkpoint import load_checkpoint, model_state
from densevit.engine.runtime import resolve_device
from densevit.engine.task import TASKS, Task
from densevit.errors import ConfigError, UserInputError


def import_task_modules(data: dict[str, Any], where: str) -> None:
    """Import the modules a config lists in ``train.imports`` (custom tasks and models register there).

    Runs on the raw mapping, before typing: the task these modules register decides the
    schema of the ``data`` and ``loss`` sections.
    """
    names = (data.get("train") or {}).get("imports") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: train.imports: expected a list of module names, got {names!r}")
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"{where}: train.imports: cannot import {name!r}: {err}") from None


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """``load_config`` that first imports the config's ``train.imports``."""
    data = apply_overrides(read_yaml_with_bases(path), overrides)
    import_task_modules(data, str(path))
    return build_config(data, where=str(path))


def build_task(cfg: ExperimentConfig) -> Task:
    """The registered task named by ``cfg.task``, built from ``cfg``."""
    return TASKS.get(cfg.task)(cfg)


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Load the checkpoint's model state into ``model``; a mismatch is the user's wrong file."""
    try:
        model.load_state_dict(model_state(checkpoint, path))
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:3])
        raise UserInputError(f"{path}: the checkpoint's weights do not fit the model: {detail}") from None


def build_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Task, nn.Module]:
    """The task and the trained model (eval mode, on ``device``) that a checkpoint describes."""
    checkpoint = load_checkpoint(path)
    data = checkpoint.get("config")
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: field 'config': missing; not a densevit training checkpoint")
    where = f"{path} (stored config)"
    import_task_modules(data, where)
    cfg = build_config(data, where=where)
    cfg.model.pretrained = None  # the checkpoint holds the weights; the original file may be gone
    task = build_task(cfg)
    model = task.build_model()
    load_model_weights(model, checkpoint, path)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return task, model.to(device).eval()
