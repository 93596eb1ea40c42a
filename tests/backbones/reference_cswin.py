"""A compact, independent re-implementation of the official CSWin Transformer, as a test oracle.

The official classifier is ``CSWinTransformer`` in microsoft/CSWin-Transformer
(``models/cswin.py``, MIT). This file mirrors what densevit's backbone must agree with: the
module layout, so that ``state_dict()`` has the official keys and shapes
(``stage1_conv_embed.{0,2}``, ``stage{s}.{i}.{qkv,norm1,attns.{j}.get_v,proj,norm2,mlp.fc1,mlp.fc2}``,
``merge{1-3}.{conv,norm}``, ``norm``, ``head``), and the eval-mode arithmetic, kept in tokens
[B, L, C] as the official code keeps it. Unlike densevit's reshape-based windows, each stripe
is cut out by slicing and attended to with an explicit softmax, one stripe at a time.

Sizes: the official classifier needs a square input whose stage grids its split sizes divide
(224, or any multiple of 112); on other sizes this oracle follows the official segmentation
backbone (``segmentation/backbone/cswin_transformer.py``): q, k and v are zero-padded evenly on
both sides to whole stripes (no mask; padded keys score 0) and the output is cropped.
Official quirks kept: the stem conv pads by 2; ``attns.0`` (the first half of the channels)
attends in vertical stripes (full height, ``split`` wide), ``attns.1`` in horizontal ones.
Dropout, drop path and the official weight initialisation are left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name -> (embed_dim, depths, heads); split sizes (1, 2, 7, 7) for all three (the 224 models)
CONFIGS = {
    "tiny": (64, (1, 2, 21, 1), (2, 4, 8, 16)),
    "small": (64, (2, 4, 32, 2), (2, 4, 8, 16)),
    "base": (96, (2, 4, 32, 2), (4, 8, 16, 32)),
}
SPLITS = (1, 2, 7, 7)


class Tokens(nn.Module):
    """``Rearrange('b c h w -> b (h w) c')``, the parameter-free middle of the official stem."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LePEAttention(nn.Module):
    """One branch: ``mode`` 0 vertical stripes, 1 horizontal stripes, -1 the whole map."""

    def __init__(self, dim, heads, split, mode):
        super().__init__()
        self.heads, self.split, self.mode = heads, split, mode
        self.scale = (dim // heads) ** -0.5
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def attend(self, q, k, v):
        """One window, [B, C, h, w] each -> [B, C, h, w]."""
        batch, channels, h, w = q.shape

        def split_heads(t):  # [B, heads, h*w, head_dim]
            return t.reshape(batch, self.heads, channels // self.heads, h * w).permute(0, 1, 3, 2)

        weights = torch.softmax(split_heads(q) * self.scale @ split_heads(k).transpose(-2, -1), dim=-1)
        out = weights @ split_heads(v) + split_heads(self.get_v(v))
        return out.permute(0, 1, 3, 2).reshape(batch, channels, h, w)

    def forward(self, q, k, v):
        """q, k, v: [B, C, H, W] -> [B, C, H, W]."""
        if self.mode == -1:
            return self.attend(q, k, v)
        along = 3 if self.mode == 0 else 2  # the axis cut into stripes
        size = q.shape[along]
        pad = -size % self.split
        before = pad // 2
        if pad:
            padding = (before, pad - before, 0, 0) if along == 3 else (0, 0, before, pad - before)
            q, k, v = (F.pad(t, padding) for t in (q, k, v))
        stripes = [self.attend(*(t.narrow(along, start, self.split) for t in (q, k, v)))
                   for start in range(0, size + pad, self.split)]
        return torch.cat(stripes, dim=along).narrow(along, before, size)


class CSWinBlock(nn.Module):
    def __init__(self, dim, heads, split, last_stage):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.norm1 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        if last_stage:
            self.attns = nn.ModuleList([LePEAttention(dim, heads, split, -1)])
        else:
            self.attns = nn.ModuleList([LePEAttention(dim // 2, heads // 2, split, i) for i in range(2)])
        self.mlp = Mlp(dim, dim * 4)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, height, width):
        """x: [B, H*W, C] tokens, row-major."""
        batch, _, channels = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(batch, height, width, 3, channels).permute(3, 0, 4, 1, 2)
        if len(self.attns) == 2:
            half = channels // 2
            out = torch.cat([self.attns[0](*qkv[:, :, :half]), self.attns[1](*qkv[:, :, half:])], dim=1)
        else:
            out = self.attns[0](*qkv)
        x = x + self.proj(out.flatten(2).transpose(1, 2))
        return x + self.mlp(self.norm2(x))


class MergeBlock(nn.Module):
    def __init__(self, dim, dim_out):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x, height, width):
        x = self.conv(x.transpose(1, 2).reshape(x.shape[0], -1, height, width))
        return self.norm(x.flatten(2).transpose(1, 2)), x.shape[-2], x.shape[-1]


class ReferenceCSWin(nn.Module):
    """The official classifier's layout; ``forward`` returns the stage maps and the logits."""

    def __init__(self, name="tiny", num_classes=1000):
        super().__init__()
        dim, depths, heads = CONFIGS[name]
        self.stage1_conv_embed = nn.Sequential(nn.Conv2d(3, dim, 7, 4, 2), Tokens(), nn.LayerNorm(dim))
        for s in range(4):
            if s:
                setattr(self, f"merge{s}", MergeBlock(dim, dim * 2))
                dim *= 2
            setattr(self, f"stage{s + 1}",
                    nn.ModuleList(CSWinBlock(dim, heads[s], SPLITS[s], s == 3) for _ in range(depths[s])))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images):
        """images: [B, 3, H, W] -> ([stage 1-3 maps, normed stage 4 map] as [B, C, H/s, W/s], logits [B, K])."""
        x = self.stage1_conv_embed[0](images)
        height, width = x.shape[-2:]
        x = self.stage1_conv_embed[2](self.stage1_conv_embed[1](x))
        maps = []
        for s in range(4):
            if s:
                x, height, width = getattr(self, f"merge{s}")(x, height, width)
            for block in getattr(self, f"stage{s + 1}"):
                x = block(x, height, width)
            maps.append(x)
        maps[-1] = self.norm(maps[-1])
        logits = self.head(maps[-1].mean(dim=1))
        grids = [(height << (3 - s), width << (3 - s)) for s in range(4)]
        return [m.transpose(1, 2).reshape(m.shape[0], -1, *g) for m, g in zip(maps, grids)], logits
