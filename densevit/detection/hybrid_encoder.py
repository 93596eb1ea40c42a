"""RT-DETR's hybrid encoder (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", 2024).

Attention only where it is cheap and useful, convolutions elsewhere:

* each backbone map is projected to ``hidden_dim`` channels (1x1 conv + BN);
* *intra-scale interaction*: the coarsest map (stride 32) goes through transformer encoder
  layers (self-attention with a 2D sine-cosine position embedding);
* *cross-scale fusion*: a top-down FPN then a bottom-up PAN of ``CSPRepLayer`` blocks
  (RepVGG-style 3x3 + 1x1 convolutions in a CSP split) merge the levels.

``forward(maps: [B, C_l, H/s_l, W/s_l] per level, finest first) -> [B, hidden_dim, H/s_l, W/s_l]``
per level. The layout of names follows RT-DETRv2, so its weights convert by renaming.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevit.detection.transformer import EncoderLayer


class ConvNorm(nn.Module):
    """Conv (no bias) -> BatchNorm -> activation (SiLU, ReLU or none); ``padding`` keeps the size at stride 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 activation: str | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = {None: nn.Identity(), "silu": nn.SiLU(), "relu": nn.ReLU()}[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class RepVggBlock(nn.Module):
    """``act(BN(conv3x3(x)) + BN(conv1x1(x)))``: two branches in training (RepVGG), foldable into one 3x3."""

    def __init__(self, channels: int, activation: str = "silu") -> None:
        super().__init__()
        self.conv1 = ConvNorm(channels, channels, 3)
        self.conv2 = ConvNorm(channels, channels, 1)
        self.act = nn.SiLU() if activation == "silu" else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """CSP block: one 1x1 branch through ``num_blocks`` RepVGG blocks, one plain 1x1 branch, summed
    (and projected back to ``out_channels`` when ``expansion`` made them narrower)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3, expansion: float = 1.0,
                 activation: str = "silu") -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNorm(in_channels, hidden, 1, activation=activation)
        self.conv2 = ConvNorm(in_channels, hidden, 1, activation=activation)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, activation) for _ in range(num_blocks)])
        self.conv3 = ConvNorm(hidden, out_channels, 1, activation=activation) if hidden != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


def sincos_position_2d(height: int, width: int, dim: int, temperature: float = 10000.0,
                       dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """RT-DETR's fixed 2D position embedding [1, height*width, dim] for a row-by-row flattened map.

    Blocks of dim/4: sin and cos of ``a * w_k``, then of ``b * w_k`` (``w_k = T^(-k / (dim/4))``),
    with ``(a, b) = divmod(token index, height)``: RT-DETR lays its grid out column by column, so
    for square maps ``a`` is the row and ``b`` the column. Kept as it is for its weights.
    """
    if dim % 4:
        raise ValueError(f"the 2D sine-cosine embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    # float32 whatever the model's dtype, as RT-DETR computes it (float64 runs then match its module)
    index = torch.arange(height * width, device=device)
    a = torch.div(index, height, rounding_mode="floor").to(torch.float32)
    b = torch.remainder(index, height).to(torch.float32)
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    out_a, out_b = a[:, None] * omega[None], b[:, None] * omega[None]
    embedding = torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)
    return embedding[None].to(dtype)


class HybridEncoder(nn.Module):
    """Projection, intra-scale attention and cross-scale fusion (see the module docstring).

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. 512, 1024, 2048).
        hidden_dim: width of every output map.
        num_heads, ffn_dim, dropout, num_encoder_layers: the attention layers' sizes.
        encoder_levels: which levels get attention (RT-DETR: the coarsest, index 2).
        expansion: CSP hidden width relative to ``hidden_dim`` (R18/R34: 0.5).
        depth_mult: scales the 3 RepVGG blocks of each CSP layer.
    """

    def __init__(self, in_channels: Sequence[int] = (512, 1024, 2048), hidden_dim: int = 256, num_heads: int = 8,
                 ffn_dim: int = 1024, dropout: float = 0.0, num_encoder_layers: int = 1,
                 encoder_levels: Sequence[int] = (2,), expansion: float = 1.0, depth_mult: float = 1.0,
                 temperature: float = 10000.0) -> None:
        super().__init__()
        self.hidden_dim, self.temperature = hidden_dim, temperature
        self.encoder_levels = list(encoder_levels)
        levels = len(in_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, hidden_dim, 1, bias=False), norm=nn.BatchNorm2d(hidden_dim)))
            for c in in_channels
        )
        layer = EncoderLayer(hidden_dim, num_heads, ffn_dim, dropout, activation="gelu")
        self.encoder = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(layer) for _ in range(num_encoder_layers)) for _ in self.encoder_levels
        )
        blocks = round(3 * depth_mult)
        self.lateral_convs = nn.ModuleList(ConvNorm(hidden_dim, hidden_dim, 1, activation="silu") for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, blocks, expansion) for _ in range(levels - 1))
        self.downsample_convs = nn.ModuleList(
            ConvNorm(hidden_dim, hidden_dim, 3, 2, activation="silu") for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, blocks, expansion) for _ in range(levels - 1))

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        feats = [proj(x) for proj, x in zip(self.input_proj, maps)]
        for layers, level in zip(self.encoder, self.encoder_levels):
            batch, dim, height, width = feats[level].shape
            tokens = feats[level].flatten(2).transpose(1, 2)
            pos = sincos_position_2d(height, width, dim, self.temperature, tokens.dtype, tokens.device)
            for layer in layers:
                tokens = layer(tokens, pos)
            feats[level] = tokens.transpose(1, 2).reshape(batch, dim, height, width).contiguous()
        # top-down: each coarser result is laterally projected, upsampled and fused with the finer map
        inner = [feats[-1]]
        for k, level in enumerate(range(len(feats) - 1, 0, -1)):
            coarse = self.lateral_convs[k](inner[0])
            inner[0] = coarse
            finer = feats[level - 1]
            upsampled = F.interpolate(coarse, size=finer.shape[-2:], mode="nearest")
            inner.insert(0, self.fpn_blocks[k](torch.cat([upsampled, finer], dim=1)))
        # bottom-up: each finer result is strided down and fused with the next top-down map
        outs = [inner[0]]
        for k in range(len(feats) - 1):
            down = self.downsample_convs[k](outs[-1])
            outs.append(self.pan_blocks[k](torch.cat([down, inner[k + 1]], dim=1)))
        return outs
