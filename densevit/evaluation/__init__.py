"""Evaluators that give the reference tools' numbers: COCO AP, mIoU, Dice/HD95, top-1/top-5.

Each has ``reset()``, ``process(...)`` (per batch or case, on every process) and
``compute()`` (combined over all processes of a distributed run).
"""
from __future__ import annotations

from densevit.evaluation.classification import ClassificationEvaluator
from densevit.evaluation.coco import COCOEvaluator
from densevit.evaluation.medical import MedicalEvaluator
from densevit.evaluation.semantic import SemanticEvaluator

__all__ = ["ClassificationEvaluator", "COCOEvaluator", "MedicalEvaluator", "SemanticEvaluator"]
