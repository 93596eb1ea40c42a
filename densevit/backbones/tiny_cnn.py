"""``tiny_cnn``: a small CNN whose batch norm trains, for detectors trained from scratch (CPU demos, tests).

The registry's ResNets follow DETR's fine-tuning layout (frozen batch norm, frozen stem),
which suits ImageNet-initialised weights; trained from scratch, a network needs batch norm
that learns. This one has four stride-2 conv-BN-ReLU stages, with residual blocks on the
coarse ones. Like a ResNet it takes any H, W: its map is ceil(H / 16) x ceil(W / 16).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES


def _conv_bn(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(_conv_bn(ch, ch, 1), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.block(x))


class TinyConvNet(Backbone):
    """forward(x [B,3,H,W]) -> [Tensor[B, widths[-1], ceil(H/16), ceil(W/16)]].

    Keys: ``body.{stage}.0.*`` (the strided conv-BN) and ``body.{stage}.{1..}.*`` (residual blocks).
    """

    def __init__(self, widths: Sequence[int] = (24, 48, 96, 160), blocks: Sequence[int] = (0, 0, 1, 1)) -> None:
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"one residual-block count per stage: {len(widths)} widths, {len(blocks)} counts")
        stages, in_ch = [], 3
        for width, count in zip(widths, blocks):
            stages.append(nn.Sequential(_conv_bn(in_ch, width, 2), *(_Residual(width) for _ in range(count))))
            in_ch = width
        self.body = nn.Sequential(*stages)
        self.channels = [widths[-1]]
        self.strides = [2 ** len(widths)]

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.body(x)]


@BACKBONES.register("tiny_cnn")
def tiny_cnn(widths: Sequence[int] = (24, 48, 96, 160), blocks: Sequence[int] = (0, 0, 1, 1)) -> TinyConvNet:
    """A 0.8M-parameter stride-16 CNN with trainable batch norm (see the module docstring)."""
    return TinyConvNet(widths, blocks)
