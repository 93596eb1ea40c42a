"""DETR-family object detection: DETR and RT-DETR, matching, losses, post-processing and the ``detection`` task."""
from __future__ import annotations

from densevit.data.collate import PaddedImages
from densevit.detection import models, rtdetr, task  # noqa: F401  (registration)
from densevit.detection.criterion import SetCriterion
from densevit.detection.detr import DETR
from densevit.detection.matcher import HungarianMatcher
from densevit.detection.models import build_detr
from densevit.detection.postprocess import PostProcess

__all__ = ["DETR", "HungarianMatcher", "PaddedImages", "PostProcess", "SetCriterion", "build_detr"]
