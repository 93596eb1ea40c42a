"""DETR object detection: model, matching, loss, post-processing and the ``detection`` task."""
from __future__ import annotations

from densevit.data.collate import PaddedImages
from densevit.detection import task as _task  # noqa: F401  (registers the "detection" task)
from densevit.detection.criterion import SetCriterion
from densevit.detection.detr import DETR, build_detr, register_models
from densevit.detection.matcher import HungarianMatcher
from densevit.detection.postprocess import PostProcess

register_models()

__all__ = ["DETR", "HungarianMatcher", "PaddedImages", "PostProcess", "SetCriterion", "build_detr"]
