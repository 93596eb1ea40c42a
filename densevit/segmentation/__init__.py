"""Semantic segmentation: TransUNet models, losses, and the ``segmentation`` task."""
from __future__ import annotations

from densevit.segmentation import models, task  # noqa: F401  (registration)
from densevit.segmentation.transunet import TransUNet

__all__ = ["TransUNet"]
