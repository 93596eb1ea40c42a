"""The model factory: ``create_model(name, num_classes=..., **kw)`` and ``list_models()``.

Task packages register their factories in ``MODELS`` when imported; the two functions here
import them first, so a user never has to.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from densevit.registry import Registry

MODELS = Registry("model")

_MODEL_PACKAGES = ("densevit.detection", "densevit.segmentation")


def import_model_packages() -> None:
    """Import the task packages, whose ``__init__`` register their models and tasks."""
    for package in _MODEL_PACKAGES:
        importlib.import_module(package)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (``detr_r50``, ``transunet_r50_vitb16``, ...)."""
    import_model_packages()
    return MODELS.build(name, num_classes=num_classes, **kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern."""
    import_model_packages()
    return MODELS.names(pattern)
