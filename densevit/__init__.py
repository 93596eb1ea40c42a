"""densevit: dense prediction with vision transformers.

``densevit.create_model`` and ``densevit.list_models`` are loaded on first use (module
``__getattr__``), so that ``import densevit`` and the command line's start-up stay light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]

if TYPE_CHECKING:
    from densevit.models import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from densevit import models

        return getattr(models, name)
    raise AttributeError(f"module 'densevit' has no attribute {name!r}")
