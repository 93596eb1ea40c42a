"""TransUNet's training loss: cross-entropy plus soft Dice, with an ignore index.

The Dice term follows the reference (softmax probabilities, one Dice per class over the
whole batch, smoothing 1e-5, averaged over classes, background included); pixels equal to
``ignore_index`` count in neither term.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def soft_dice_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255, smooth: float = 1e-5) -> Tensor:
    """1 - mean over classes of 2|P∩G| / (|P|^2 + |G|^2); logits [B,K,H,W], masks [B,H,W] int64."""
    num_classes = logits.shape[1]
    valid = (masks != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(masks.clamp(0, num_classes - 1) * (masks != ignore_index), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


class CEDiceLoss(nn.Module):
    """``loss = ce_weight * CE + dice_weight * Dice``; returns ``{"loss_ce", "loss_dice", "loss"}``."""

    def __init__(self, ce_weight: float = 0.5, dice_weight: float = 0.5, ignore_index: int = 255,
                 class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, targets: dict[str, Any]) -> dict[str, Tensor]:
        """logits [B,K,H,W]; ``targets["masks"]`` [B,H,W] int64."""
        masks = targets["masks"]
        ce = F.cross_entropy(logits.float(), masks, weight=self.class_weights, ignore_index=self.ignore_index)
        dice = soft_dice_loss(logits, masks, self.ignore_index)
        return {"loss_ce": ce, "loss_dice": dice, "loss": self.ce_weight * ce + self.dice_weight * dice}
