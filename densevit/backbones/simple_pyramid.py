"""ViTDet's simple feature pyramid: multi-scale maps from a plain ViT's single stride-16 map.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (2022): instead of
an FPN over several stages, each scale is made from the last map alone — deconvolutions to go
finer, identity at stride 16, max-pooling to go coarser — then a 1x1 and a 3x3 conv, each with a
channel LayerNorm, bring every scale to the same width.
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn


def _resampler(stride: int, dim: int) -> tuple[nn.Module, int]:
    """The layers taking a stride-16 map of ``dim`` channels to ``stride``; returns them and their width."""
    if stride == 4:
        layers = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            LayerNorm2d(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        )
        return layers, dim // 4
    if stride == 8:
        return nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2), dim // 2
    if stride == 16:
        return nn.Identity(), dim
    if stride == 32:
        return nn.MaxPool2d(kernel_size=2, stride=2), dim
    raise ValueError(f"simple feature pyramid strides must be among 4, 8, 16, 32; got {stride}")


class SimpleFeaturePyramid(nn.Module):
    """Stride-16 map [B, in_channels, H/16, W/16] -> one [B, out_channels, H/s, W/s] map per stride s."""

    def __init__(self, in_channels: int, out_channels: int = 256, strides: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        self.strides = list(strides)
        if self.strides != sorted(set(self.strides)):
            raise ValueError(f"simple feature pyramid strides must be increasing and distinct, got {self.strides}")
        self.levels = nn.ModuleList()
        for stride in self.strides:
            resample, width = _resampler(stride, in_channels)
            self.levels.append(
                nn.Sequential(
                    resample,
                    nn.Conv2d(width, out_channels, kernel_size=1, bias=False),
                    LayerNorm2d(out_channels),
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    LayerNorm2d(out_channels),
                )
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [level(x) for level in self.levels]
