"""TransUNet's own encoder: a ResNetV2 root and stages (StdConv + GroupNorm) feeding a ViT.

Registered as ``r50_vit_b16`` (R50+ViT-B/16, the hybrid of the ViT paper that TransUNet
encodes with) and ``vit_b16_transunet`` (the same ViT-B/16 on plain 16x16 patches).

This is the encoder that the published TransUNet checkpoints and Google's ``R50+ViT-B_16.npz``
were trained with, reproduced operation for operation so that their weights give the same
outputs here: weight-standardised convs (eps 1e-5), GroupNorm(32, eps 1e-6), a projection
norm with one group per channel, a 3x3/2 max-pool without padding whose short skip maps are
zero-padded at the bottom and right, and a ViT without class token on the stride-16 grid.
Unlike the reference, any input whose sides are multiples of 16 works: the position
embedding is interpolated to the grid of the input. (timm's ``vit_base_r50_s16_224``, kept
as ``r50_vit_b16_timm``, pads its convs and pool 'same'-style and normalises with other
epsilons, so the same weights give other outputs there.)

``forward`` follows the backbone contract: a list of NCHW maps at strides 2, 4, 8, 16
(channels 64, 256, 512, hidden) for the hybrid, or one stride-16 map without the CNN.

Keys are this module's own (no library network is wrapped, so there is no ``body.``):
``stem.conv``, ``stem.norm``, ``stem.stages.S.U.{conv,norm}{1,2,3}``,
``stem.stages.S.0.downsample`` / ``downsample_norm``, ``patch_embed``, ``pos_embed``,
``blocks.N.*`` (timm ``Block``), ``norm``. Pretrained files: our keys, timm's
``vit_base_r50_s16_224`` / ``vit_base_patch16_224`` keys (mapped by name; the class token and
its position are dropped), or a Google ViT ``.npz``.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import StdConv2d, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from densevit.backbones.base import Backbone
from densevit.backbones.google_vit import google_vit_to_encoder, is_google_vit
from densevit.backbones.registry import BACKBONES

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


def resize_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """[1, N(+1 class token), D] -> [1, grid_h*grid_w, D]: drop a class token, resize the square grid bilinearly."""
    count = grid[0] * grid[1]
    if pos.shape[1] != count and (pos.shape[1] - 1 == count or math.isqrt(pos.shape[1]) ** 2 != pos.shape[1]):
        pos = pos[:, 1:]
    side = math.isqrt(pos.shape[1])
    return resample_abs_pos_embed(pos, list(grid), [side, side], num_prefix_tokens=0, interpolation="bilinear",
                                  antialias=False)


# timm's ``vit_base_r50_s16_224`` / ``vit_base_patch16_224`` key -> ours (blocks and norm keep their names).
_TIMM_RENAMES = [
    (r"patch_embed\.backbone\.stem\.(conv|norm)\.(.+)", r"stem.\1.\2"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.downsample\.conv\.(.+)", r"stem.stages.\1.\2.downsample.\3"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.downsample\.norm\.(.+)", r"stem.stages.\1.\2.downsample_norm.\3"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.(.+)", r"stem.stages.\1.\2.\3"),
    (r"patch_embed\.proj\.(.+)", r"patch_embed.\1"),
]


class TransUNetEncoder(Backbone):
    """Optional ResNetV2 stem, 1x1 (or 16x16) patch embedding, ViT blocks, final LayerNorm.

    forward(x: [B, in_chans, H, W]) -> [s2: [B, w, H/2, W/2], s4: [B, 4w, H/4, W/4],
    s8: [B, 8w, H/8, W/8], s16: [B, hidden, H/16, W/16]] with the stem (w = ``resnet_width``),
    or [s16] without it; the last map is the tokens after the final LayerNorm.

    Args:
        hybrid: with the ResNetV2 stem (R50+ViT) or plain 16x16 patches (ViT).
        img_size: the training size; the position embedding is stored for its grid.
    """

    accepts_google_npz = True

    def __init__(
        self,
        in_chans: int = 3,
        hybrid: bool = True,
        img_size: Sequence[int] = (224, 224),
        hidden: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        resnet_layers: Sequence[int] = (3, 4, 9),
        resnet_width: int = 64,
    ) -> None:
        super().__init__()
        self.stem = ResNetV2Stem(in_chans, tuple(resnet_layers), resnet_width) if hybrid else None
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
        return resample_abs_pos_embed(self.pos_embed, [height, width], list(self.grid), num_prefix_tokens=0,
                                      interpolation="bilinear", antialias=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: [B, C, H, W] with H, W multiples of 16 -> maps at ``self.strides``."""
        self.check_input(x)
        skips: list[Tensor] = []
        if self.stem is not None:
            *skips, x = self.stem(x)
        x = self.patch_embed(x)
        batch, hidden, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position_embedding(height, width)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return [*skips, tokens.transpose(1, 2).reshape(batch, hidden, height, width).contiguous()]

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def in_library_layout(self, state: dict[str, Tensor]) -> bool:
        # timm's transformer keys (blocks.*, norm.*, pos_embed) are ours too; its patch projection is not
        return any(k.startswith("patch_embed.proj.") for k in state) or super().in_library_layout(state)

    def convert_library_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm's hybrid / plain ViT-B/16 keys, or Google's ``.npz`` arrays -> ours; a class token and
        its position are dropped, and the position grid is resized to this encoder's."""
        if is_google_vit(state):
            out = google_vit_to_encoder(state)
            out["pos_embed"] = resize_pos_embed(out["pos_embed"], self.grid)
            return out
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if key == "cls_token" or key.startswith(self.classifier_prefixes):
                continue
            for pattern, replacement in _TIMM_RENAMES:
                if re.fullmatch(pattern, key):
                    key = re.sub(pattern, replacement, key)
                    break
            out[key] = value
        if "pos_embed" in out:
            out["pos_embed"] = resize_pos_embed(out["pos_embed"], self.grid)
        return out


@BACKBONES.register("r50_vit_b16")
def r50_vit_b16(**kwargs) -> TransUNetEncoder:
    """R50+ViT-B/16 hybrid, TransUNet's encoder exactly (skips at strides 2/4/8): 97.9M parameters."""
    return TransUNetEncoder(hybrid=True, **kwargs)


@BACKBONES.register("vit_b16_transunet")
def vit_b16_transunet(**kwargs) -> TransUNetEncoder:
    """ViT-B/16 as TransUNet's plain-ViT encoder (no class token, stride 16 only): 85.8M parameters."""
    return TransUNetEncoder(hybrid=False, **kwargs)
