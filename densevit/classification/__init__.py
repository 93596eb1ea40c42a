"""Image classification: a registry backbone's pooled feature and a linear head (``classifier_*``
models), ImageFolder / CSV data with timm's transforms, and ``task: classification``."""
from __future__ import annotations

from densevit.classification import models, task  # noqa: F401  (registration)
from densevit.classification.classifier import Classifier

__all__ = ["Classifier"]
