"""TransUNet's own encoder: a ResNetV2 root and stages (StdConv + GroupNorm) feeding a ViT.

This is the encoder that the published TransUNet checkpoints and Google's ``R50+ViT-B_16.npz``
were trained with, reproduced operation for operation so that their weights give the same
outputs here: weight-standardised convs (eps 1e-5), GroupNorm(32, eps 1e-6), a projection
norm with one group per channel, a 3x3/2 max-pool without padding whose short skip maps are
zero-padded at the bottom and right, and a ViT without class token on the stride-16 grid.
Unlike the reference, any input whose sides are multiples of 16 works: the position
embedding is interpolated to the grid of the input.

``forward`` follows the backbone contract: a list of NCHW maps at strides 2, 4, 8, 16
(channels 64, 256, 512, hidden) for the hybrid, or one stride-16 map without the CNN.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import StdConv2d
from timm.models.vision_transformer import Block
from torch import Tensor, nn

_StdConv = partial(StdConv2d, eps=1e-5)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here) -> 1x1 bottleneck, GroupNorm after each conv, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _StdConv(cin, cmid, 1, bias=False)
        self.norm1 = _group_norm(cmid)
        self.conv2 = _StdConv(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.norm2 = _group_norm(cmid)
        self.conv3 = _StdConv(cmid, cout, 1, bias=False)
        self.norm3 = _group_norm(cout)
        self.downsample: nn.Module | None = None
        self.downsample_norm: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = _StdConv(cin, cout, 1, stride=stride, bias=False)
            # One group per channel with the default eps: the layout the published weights use.
            self.downsample_norm = nn.GroupNorm(cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample_norm(self.downsample(x))
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(shortcut + y)


def _stage(cin: int, cout: int, cmid: int, units: int, stride: int) -> nn.Sequential:
    blocks = [Bottleneck(cin, cout, cmid, stride)]
    blocks += [Bottleneck(cout, cout, cmid) for _ in range(units - 1)]
    return nn.Sequential(*blocks)


class ResNetV2Stem(nn.Module):
    """Root conv (stride 2) and three stages; returns the stride-16 map and skips at strides 8, 4, 2."""

    def __init__(self, in_chans: int = 3, layers: tuple[int, int, int] = (3, 4, 9), width: int = 64) -> None:
        super().__init__()
        self.conv = _StdConv(in_chans, width, 7, stride=2, padding=3, bias=False)
        self.norm = _group_norm(width)
        self.stages = nn.ModuleList(
            [
                _stage(width, width * 4, width, layers[0], 1),
                _stage(width * 4, width * 8, width * 2, layers[1], 2),
                _stage(width * 8, width * 16, width * 4, layers[2], 2),
            ]
        )
        self.channels = [width, width * 4, width * 8, width * 16]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: [B, C, H, W] -> [s2, s4, s8, s16] maps (H/2, H/4, H/8, H/16)."""
        height, width = x.shape[-2:]
        x = F.relu(self.norm(self.conv(x)))
        features = [x]
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                features.append(_pad_to(x, height // (4 << i), width // (4 << i)))
        features.append(x)
        return features


def _pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """Zero-pad ``x`` at the bottom and right to ``height`` x ``width`` (the unpadded pool is short)."""
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))


class TransUNetEncoder(nn.Module):
    """Optional ResNetV2 stem, 1x1 (or 16x16) patch embedding, ViT blocks, final LayerNorm.

    Args:
        hybrid: with the ResNetV2 stem (R50+ViT) or plain 16x16 patches (ViT).
        img_size: the training size; the position embedding is stored for its grid.
    """

    def __init__(
        self,
        in_chans: int = 3,
        hybrid: bool = True,
        img_size: tuple[int, int] = (224, 224),
        hidden: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        resnet_layers: tuple[int, int, int] = (3, 4, 9),
        resnet_width: int = 64,
    ) -> None:
        super().__init__()
        self.stem = ResNetV2Stem(in_chans, resnet_layers, resnet_width) if hybrid else None
        embed_in = self.stem.channels[-1] if self.stem is not None else in_chans
        patch = 1 if hybrid else 16
        self.patch_embed = nn.Conv2d(embed_in, hidden, kernel_size=patch, stride=patch)
        self.grid = (img_size[0] // 16, img_size[1] // 16)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(hidden, num_heads, mlp_ratio=mlp_dim / hidden, qkv_bias=True, norm_layer=norm)
            for _ in range(depth)
        )
        self.norm = norm(hidden)
        skips = self.stem.channels[:-1] if self.stem is not None else []
        self.channels = [*skips, hidden]
        self.strides = [2, 4, 8, 16] if self.stem is not None else [16]

    def position_embedding(self, height: int, width: int) -> Tensor:
        """[1, height*width, hidden]: the stored grid, bilinearly resized when the grid differs."""
        if (height, width) == self.grid:
            return self.pos_embed
        grid = self.pos_embed.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: [B, C, H, W] with H, W multiples of 16 -> maps at ``self.strides``."""
        skips: list[Tensor] = []
        if self.stem is not None:
            *skips, x = self.stem(x)
        x = self.patch_embed(x)
        batch, hidden, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position_embedding(height, width)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return [*skips, tokens.transpose(1, 2).reshape(batch, hidden, height, width)]
