"""Semantic segmentation: TransUNet models, the CE + Dice loss, and two tasks on one model:
``image_segmentation`` (pictures, mIoU) and ``volume_segmentation`` (CT/MRI, Dice and HD95)."""
from __future__ import annotations

from densevit.segmentation import config, image_task, models, volume_task  # noqa: F401  (registration)
from densevit.segmentation.transunet import TransUNet

__all__ = ["TransUNet"]
