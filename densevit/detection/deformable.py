"""Multi-scale deformable attention (Zhu et al., Deformable DETR, 2021), sampled with ``F.grid_sample``.

Each query looks at a few points per feature level around its reference box instead of at
every token: ``P_l`` points on level ``l`` (points may differ by level, as in RT-DETRv2), per
head, at learned offsets, weighted by a softmax over all the head's points. The sampling is
plain PyTorch (bilinear ``grid_sample`` with zeros outside the map, ``align_corners=False``),
so it runs on CPU and CUDA, in float64, under autocast and ``torch.compile``, and exports to
ONNX; there is no custom kernel.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def deformable_sample(value: Tensor, shapes: Sequence[tuple[int, int]], locations: Tensor, weights: Tensor,
                      points_per_level: Sequence[int]) -> Tensor:
    """The weighted sum of bilinear samples of ``value`` at ``locations``.

    Args:
        value: [B, sum(h*w), heads, D], the levels' tokens one after another, row by row.
        shapes: (h, w) of each level.
        locations: [B, Q, heads, sum(P_l), 2], (x, y) in [0, 1] over each level's map (0 and 1 are
            the outer edges of the first and last pixels), the points of level 0 first.
        weights: [B, Q, heads, sum(P_l)], the points' weights.
        points_per_level: P_l for each level.

    Returns:
        [B, Q, heads * D].
    """
    batch, _, heads, dim = value.shape
    queries = locations.shape[1]
    levels = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in shapes], dim=-1)  # [B*heads, D, h*w]
    grids = (2 * locations - 1).permute(0, 2, 1, 3, 4).flatten(0, 1).split(list(points_per_level), dim=-2)
    samples = [
        F.grid_sample(level.reshape(batch * heads, dim, h, w), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)  # [B*heads, D, Q, P_l]
        for level, grid, (h, w) in zip(levels, grids, shapes)
    ]
    weights = weights.permute(0, 2, 1, 3).reshape(batch * heads, 1, queries, -1)
    out = (torch.cat(samples, dim=-1) * weights).sum(-1)  # [B*heads, D, Q]
    return out.reshape(batch, heads * dim, queries).transpose(1, 2)


class MSDeformableAttention(nn.Module):
    """Queries attend to sampled points of a multi-level feature map (RT-DETRv2's variant).

    Args:
        dim: model width C.
        num_heads: attention heads (``dim`` divisible by it).
        num_points: points per head and level: one number, or one per level.
        offset_scale: how far points reach, as a fraction of the reference box's size.

    ``forward(query [B,Q,C], reference [B,Q,1,4] (cx, cy, w, h) or [B,Q,1,2] (x, y) in [0,1],
    value [B,N,C], shapes, value_mask [B,N] bool (True = a real token) or None) -> [B,Q,C]``.
    With box references a point lands at ``centre + offset / P_l * size * offset_scale``; with
    point references at ``point + offset / (w, h)`` of its level.

    With ``keep_sampling`` set (off by default), each call also stores ``sampling``:
    (locations [B,Q,heads,sum(P_l),2] in [0,1], weights [B,Q,heads,sum(P_l)]), detached, as
    given to :func:`deformable_sample`.
    """

    keep_sampling: bool = False
    sampling: tuple[Tensor, Tensor] | None = None

    def __init__(self, dim: int = 256, num_heads: int = 8, num_points: int | Sequence[int] = 4,
                 num_levels: int = 3, offset_scale: float = 0.5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        points = [num_points] * num_levels if isinstance(num_points, int) else list(num_points)
        if len(points) != num_levels:
            raise ValueError(f"num_points: one count per level expected ({num_levels}), got {points}")
        self.dim, self.num_heads, self.points_per_level = dim, num_heads, points
        self.offset_scale = offset_scale
        total = num_heads * sum(points)
        self.sampling_offsets = nn.Linear(dim, total * 2)
        self.attention_weights = nn.Linear(dim, total)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # 1 / P_l for each point: a level with more points spreads them over the same box
        scale = torch.tensor([1 / n for n in points for _ in range(n)])
        self.register_buffer("point_scale", scale, persistent=False)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Offsets start on rays, one direction per head, at 1..P_l steps; weights start uniform."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.cat([torch.arange(1, n + 1) for n in self.points_per_level]).to(torch.float32)
        grid = directions[:, None, :] * steps[None, :, None]  # [heads, sum(P), 2]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: Sequence[tuple[int, int]],
                value_mask: Tensor | None = None) -> Tensor:
        batch, queries, _ = query.shape
        points = sum(self.points_per_level)
        value = self.value_proj(value)
        if value_mask is not None:
            value = value * value_mask[..., None].to(value.dtype)
        value = value.reshape(batch, value.shape[1], self.num_heads, self.dim // self.num_heads)
        offsets = self.sampling_offsets(query).reshape(batch, queries, self.num_heads, points, 2)
        weights = self.attention_weights(query).reshape(batch, queries, self.num_heads, points).softmax(-1)
        if reference.shape[-1] == 4:
            scale = self.point_scale.to(query.dtype)[:, None]  # [sum(P), 1]
            reach = offsets * scale * reference[:, :, None, :, 2:] * self.offset_scale
            locations = reference[:, :, None, :, :2] + reach
        elif reference.shape[-1] == 2:
            sizes = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            per_point = torch.repeat_interleave(sizes, torch.tensor(self.points_per_level, device=query.device), dim=0)
            locations = reference[:, :, None, :, :] + offsets / per_point
        else:
            raise ValueError(f"reference boxes must end in 2 or 4 values, got shape {tuple(reference.shape)}")
        if self.keep_sampling:
            self.sampling = (locations.detach(), weights.detach())
        out = deformable_sample(value, shapes, locations, weights, self.points_per_level)
        return self.output_proj(out)
