"""Sine position encoding computed from the padding mask (DETR, Carion et al. 2020)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_encode(values: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine features of scalars: values [...] -> [..., num_feats].

    Feature ``2i`` is ``sin(v / T^(2i/n))`` and ``2i + 1`` is ``cos(v / T^(2i/n))`` (DETR's
    interleaved layout). Computed in float32 (float64 for float64 input).
    """
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    dim_t = torch.arange(num_feats, dtype=dtype, device=values.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    scaled = values.to(dtype)[..., None] / dim_t
    return torch.stack((scaled[..., 0::2].sin(), scaled[..., 1::2].cos()), dim=-1).flatten(-2)


def point_encoding(points: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine encoding of normalised points [..., 2] (x, y) -> [..., dim] (y half, then x half),
    the formula :class:`PositionEmbeddingSine` applies to pixel positions."""
    encoded = sine_encode(points * (2 * math.pi), dim // 2, temperature)  # [..., 2, dim/2]
    return torch.cat([encoded[..., 1, :], encoded[..., 0, :]], dim=-1).to(points.dtype)


class PositionEmbeddingSine(nn.Module):
    """2D sine/cosine encoding of each valid pixel's normalised (y, x) position.

    Positions count only valid (non-padding) pixels, so an image padded inside a batch gets
    the same encoding as the same image alone. The first half of the channels encodes y, the
    second half x.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        """``mask`` [B,H,W] bool, True at padding -> encoding [B, 2*num_pos_feats, H, W] float32."""
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        pos_y = sine_encode(y_embed, self.num_pos_feats, self.temperature)
        pos_x = sine_encode(x_embed, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
