"""Evaluators that give the reference tools' numbers: COCO AP, mIoU, Dice/HD95, top-1/top-5.

Each has ``reset()``, ``process(...)`` (per batch or case, on every process) and
``compute()`` (combined over all processes of a distributed run).

The evaluators are loaded on first use (module ``__getattr__``): importing one of them, or
the package, pays for no other (``densevit score classification`` never imports pycocotools).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from densevit.evaluation.classification import ClassificationEvaluator
    from densevit.evaluation.coco import COCOEvaluator
    from densevit.evaluation.medical import MedicalEvaluator
    from densevit.evaluation.semantic import SemanticEvaluator

__all__ = ["ClassificationEvaluator", "COCOEvaluator", "MedicalEvaluator", "SemanticEvaluator"]

_MODULES = {"ClassificationEvaluator": "classification", "COCOEvaluator": "coco",
            "MedicalEvaluator": "medical", "SemanticEvaluator": "semantic"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
