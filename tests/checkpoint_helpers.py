"""A checkpoint of an untrained model, written as ``densevit train`` writes one, for tests of the
commands that read checkpoints (predict, evaluate, export)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densevit.config import ExperimentConfig, build_config
from densevit.engine.build import build_model, build_task
from densevit.engine.checkpoint import save_checkpoint


def untrained_checkpoint(path: Path, config: ExperimentConfig | dict[str, Any]) -> Path:
    """Write ``path``: the model that ``config`` (a config, or the dict of one) builds, seeded with 0."""
    cfg = build_config(config) if isinstance(config, dict) else config
    task = build_task(cfg)
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(task).state_dict(), "config": cfg.to_dict(),
                     "class_names": task.class_names()}, path)
    return path
