"""The model factory: ``create_model(name, num_classes=..., **kw)`` and ``list_models()``.

The head packages register their factories in ``MODELS`` with ``@MODELS.register()``; the
registry finds those packages through the ``densevit.heads`` entry points, so a user never
imports them first (see :mod:`densevit.registry`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from densevit.registry import HEAD_PLUGINS, Registry

if TYPE_CHECKING:
    from torch import nn

MODELS = Registry("model", plugin_group=HEAD_PLUGINS)


def create_model(name: str, num_classes: int, **kwargs: Any) -> "nn.Module":
    """Build the registered model ``name`` (``detr_r50``, ``transunet_r50_vitb16``, ...)."""
    return MODELS.build(name, num_classes=num_classes, **kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern."""
    return MODELS.names(pattern)
