"""CE + Dice against brute-force sums; sliding windows and volume reassembly against whole-input results."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densevit.segmentation.inferer import segment_volume, sliding_window_probabilities
from densevit.segmentation.losses import CEDiceLoss


def _brute_force_dice_loss(logits, masks, ignore_index):
    probs = logits.softmax(dim=1)
    k = logits.shape[1]
    total = 0.0
    for c in range(k):
        inter = p2 = g2 = 0.0
        for b, y, x in np.ndindex(*masks.shape):
            if masks[b, y, x] == ignore_index:
                continue
            p, g = float(probs[b, c, y, x]), float(masks[b, y, x] == c)
            inter, p2, g2 = inter + p * g, p2 + p * p, g2 + g * g
        total += (2 * inter + 1e-5) / (p2 + g2 + 1e-5)
    return 1 - total / k


def test_ce_dice_matches_brute_force_and_respects_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    masks = torch.randint(0, 3, (2, 5, 6))
    masks[0, :2] = 255
    loss = CEDiceLoss(ce_weight=0.3, dice_weight=0.7, ignore_index=255)(logits, {"masks": masks})
    valid = masks != 255
    ce = -torch.log_softmax(logits, 1).gather(1, masks.clamp(max=2)[:, None])[:, 0][valid].mean()
    dice = _brute_force_dice_loss(logits, masks, 255)
    assert abs(loss["loss_ce"].item() - ce.item()) < 1e-6
    assert abs(loss["loss_dice"].item() - dice) < 1e-6
    assert abs(loss["loss"].item() - (0.3 * ce.item() + 0.7 * dice)) < 1e-6
    changed = logits.clone()
    changed[0, :, :2] = 100.0  # only ignored pixels change
    again = CEDiceLoss(0.3, 0.7, 255)(changed, {"masks": masks})
    assert torch.allclose(again["loss"], loss["loss"])


def test_sliding_window_of_a_pointwise_model_equals_the_whole_image():
    model = nn.Conv2d(3, 4, kernel_size=1).eval()
    image = torch.randn(3, 70, 100)
    expected = model(image[None])[0].softmax(dim=0)
    for overlap in (0.0, 0.5, 0.75):
        got = sliding_window_probabilities(model, image, (32, 48), overlap=overlap, batch_size=3, size_divisor=16)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    small = torch.randn(3, 20, 30)  # smaller than one window: padded, then cropped back
    got = sliding_window_probabilities(model, small, (32, 48), size_divisor=16)
    torch.testing.assert_close(got, model(small[None])[0].softmax(dim=0), atol=1e-6, rtol=1e-6)


class OneHotOfChannel(nn.Module):
    """Logits whose arg-max is channel 0 of the input, rounded: a model that 'reads' the answer."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return F.one_hot(x[:, 0].round().long(), self.num_classes).permute(0, 3, 1, 2).float() * self.scale


def test_volume_prediction_is_reassembled_in_xyz_order():
    label = torch.zeros(20, 16, 6, dtype=torch.long)
    label[2:9, 3:12, 1] = 1
    label[10:18, 1:5, 4:] = 2
    image = label[None].float()  # [C=1, X, Y, Z]
    got = segment_volume(OneHotOfChannel(3), image, size=(20, 16), batch_size=4)
    assert torch.equal(got, label)
