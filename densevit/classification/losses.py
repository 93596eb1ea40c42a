"""The classification loss: cross-entropy (label smoothing as an option) or, for mixed batches,
soft-target cross-entropy; and the batch mixing (timm's mixup / cutmix)."""
from __future__ import annotations

from typing import Any

from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import Tensor, nn

from densevit.errors import ConfigError


class ClassificationLoss(nn.Module):
    """``criterion(outputs, targets) -> {"ce", "loss"}``.

    ``outputs`` is the logits [B, K], scored against ``targets["labels"]`` [B]; or, for a mixed
    batch, ``{"logits": [B, K], "soft_targets": [B, K]}`` (rows summing to 1), scored against those.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.hard = LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else nn.CrossEntropyLoss()
        self.soft = SoftTargetCrossEntropy()

    def forward(self, outputs: Tensor | dict[str, Tensor], targets: dict[str, Any]) -> dict[str, Tensor]:
        if isinstance(outputs, dict):
            ce = self.soft(outputs["logits"].float(), outputs["soft_targets"])
        else:
            ce = self.hard(outputs.float(), targets["labels"])
        return {"ce": ce, "loss": ce}


def build_mixup(loss: Any, num_classes: int, batch_size: int) -> Mixup | None:
    """timm's ``Mixup`` for the ``loss`` section, or None when mixup and cutmix are both off."""
    if loss.mixup_alpha <= 0 and loss.cutmix_alpha <= 0:
        return None
    if batch_size % 2:
        raise ConfigError(f"train.batch_size: mixup / cutmix pair each batch with its reverse and need an even "
                          f"batch size, got {batch_size}")
    return Mixup(mixup_alpha=loss.mixup_alpha, cutmix_alpha=loss.cutmix_alpha, prob=loss.mixup_prob,
                 switch_prob=loss.mixup_switch_prob, label_smoothing=loss.label_smoothing, num_classes=num_classes)
