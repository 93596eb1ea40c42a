"""TransUNet's cascaded upsampler: ``conv_more``, then 2x bilinear steps that fuse encoder skips.

Follows Chen et al. 2021 (TransUNet, "CUP"): the deepest encoder map is projected by a 3x3
conv to ``head_channels``; each decoder block upsamples by 2 (bilinear, corners aligned as
the reference's ``UpsamplingBilinear2d``), concatenates the skip of the same stride when it
has one, and applies two 3x3 conv + BN + ReLU layers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevit.errors import UserInputError


class ConvBNReLU(nn.Sequential):
    """3x3 (or ``kernel_size``) conv without bias, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample to the skip's size (or 2x without a skip), concatenate the skip, two convs."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """x: [B, C_in, h, w]; skip: [B, C_skip, ~2h, ~2w] -> [B, C_out, 2h, 2w] (or the skip's size)."""
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class CascadedUpsampler(nn.Module):
    """The decoder: ``conv_more`` and one :class:`DecoderBlock` per factor of 2 back to full size.

    Args:
        in_channels: channels of the deepest encoder map.
        skip_channels: channels of the skip maps, deepest first (stride s/2, s/4, ...).
        decoder_channels: output channels of each block; their number is log2 of the
            deepest stride, so the last block is at full resolution.
        n_skip: how many of the skips to use (the first ``n_skip`` blocks get one).
        head_channels: output channels of ``conv_more``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: Sequence[int],
        decoder_channels: Sequence[int],
        n_skip: int,
        head_channels: int = 512,
    ) -> None:
        super().__init__()
        if not 0 <= n_skip <= len(skip_channels):
            raise UserInputError(f"model.kwargs.n_skip: expected 0 to {len(skip_channels)} for this encoder, got {n_skip}")
        self.n_skip = n_skip
        self.conv_more = ConvBNReLU(in_channels, head_channels)
        ins = [head_channels, *decoder_channels[:-1]]
        skips = [skip_channels[i] if i < n_skip else 0 for i in range(len(decoder_channels))]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips)
        )

    def forward(self, deepest: Tensor, skips: Sequence[Tensor]) -> Tensor:
        """deepest: [B, C, H/s, W/s]; skips deepest first -> [B, decoder_channels[-1], H, W]."""
        x = self.conv_more(deepest)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < self.n_skip else None)
        return x
