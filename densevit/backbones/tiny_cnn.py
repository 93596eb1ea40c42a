"""``tiny_cnn``: a small CNN whose batch norm trains, for detectors trained from scratch (CPU demos, tests).

The registry's ResNets follow DETR's fine-tuning layout (frozen batch norm, frozen stem),
which suits ImageNet-initialised weights; trained from scratch, a network needs batch norm
that learns. This one has four stride-2 conv-BN-ReLU stages, with residual blocks on the
coarse ones. Like a ResNet it takes any H, W: stage ``i``'s map is ceil(H / 2^(i+1)) x
ceil(W / 2^(i+1)). It gives the last stage's map, or those of ``out_indices`` (multi-scale heads).
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
    """forward(x [B,3,H,W]) -> [Tensor[B, widths[i], ceil(H/2^(i+1)), ceil(W/2^(i+1))] for i in out_indices]
    (default: the last stage only, stride 16 with four stages).

    Keys: ``body.{stage}.0.*`` (the strided conv-BN) and ``body.{stage}.{1..}.*`` (residual blocks).
    """

    def __init__(self, widths: Sequence[int] = (24, 48, 96, 160), blocks: Sequence[int] = (0, 0, 1, 1),
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"one residual-block count per stage: {len(widths)} widths, {len(blocks)} counts")
        self.out_indices = sorted(out_indices) if out_indices is not None else [len(widths) - 1]
        if not self.out_indices or not all(0 <= i < len(widths) for i in self.out_indices):
            raise ValueError(f"out_indices: stages 0..{len(widths) - 1} expected, got {list(out_indices or [])}")
        stages, in_ch = [], 3
        for width, count in zip(widths, blocks):
            stages.append(nn.Sequential(_conv_bn(in_ch, width, 2), *(_Residual(width) for _ in range(count))))
            in_ch = width
        self.body = nn.Sequential(*stages[: self.out_indices[-1] + 1])
        self.channels = [widths[i] for i in self.out_indices]
        self.strides = [2 ** (i + 1) for i in self.out_indices]

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for index, stage in enumerate(self.body):
            x = stage(x)
            if index in self.out_indices:
                maps.append(x)
        return maps


@BACKBONES.register("tiny_cnn")
def tiny_cnn(widths: Sequence[int] = (24, 48, 96, 160), blocks: Sequence[int] = (0, 0, 1, 1),
             out_indices: Sequence[int] | None = None) -> TinyConvNet:
    """A 0.8M-parameter stride-16 CNN with trainable batch norm (see the module docstring)."""
    return TinyConvNet(widths, blocks, out_indices)
