"""Transformer in Transformer (TNT-S, timm): chosen blocks as stride-16 maps, any input size.

Han et al., "Transformer in Transformer" (2021): each 16x16 patch is itself a sequence of 4x4
"pixel" tokens with an inner transformer; the outer transformer runs over patches like ViT.

timm's TNT checks for the 224x224 training size and fixes the patch count at construction, so
this wrapper runs the same layers with the grid of each input: the outer (patch) position
embedding is resampled to the grid with timm's ``resample_abs_pos_embed`` (bicubic, as for
ViT); the inner (pixel) position embedding indexes positions inside one 16x16 patch, which do
not depend on the image size, so it is used as is. At 224x224 the result is exactly timm's.
"""
from __future__ import annotations

from typing import Callable, Sequence

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.tnt import checkpoint_filter_fn
from torch import nn

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES
from densevit.backbones.vit import absolute_block_indices


class TNTBackbone(Backbone):
    """A timm TNT returning chosen outer blocks.

    forward(x: [B, 3, H, W]) -> one [B, D, H/16, W/16] map per entry of ``out_indices``
    (D = outer width), after the final LayerNorm when ``norm`` is true; class token dropped.

    Keys: timm's TNT keys under ``body.`` (``body.patch_pos``, ``body.pixel_pos``, ``body.blocks.*``).
    """

    def __init__(
        self,
        timm_name: str,
        out_indices: Sequence[int] = (-1,),
        norm: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = timm.create_model(timm_name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        if self.body.pixel_embed.legacy:
            raise ValueError(f"{timm_name} uses the legacy pixel embedding, which this wrapper does not support")
        self.out_indices = absolute_block_indices(out_indices, len(self.body.blocks))
        self.norm = norm
        self.patch_size = tuple(self.body.pixel_embed.patch_size)
        self.channels = [self.body.embed_dim] * len(self.out_indices)
        self.strides = [max(self.patch_size)] * len(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        tnt = self.body
        embed = tnt.pixel_embed
        batch, in_chans, height, width = x.shape
        grid = (height // self.patch_size[0], width // self.patch_size[1])
        num_patches = grid[0] * grid[1]

        # pixel tokens: [B * N, P, inner_dim], P = pixels per patch (timm's PixelEmbed, any grid)
        pixels = embed.unfold(x).transpose(1, 2).reshape(batch * num_patches, in_chans, *self.patch_size)
        pixels = embed.proj(pixels) + tnt.pixel_pos
        pixels = pixels.reshape(batch * num_patches, embed.in_dim, -1).transpose(1, 2)

        # patch tokens: [B, 1 + N, D] with the class token first
        patches = tnt.norm2_proj(tnt.proj(tnt.norm1_proj(pixels.reshape(batch, num_patches, -1))))
        patches = torch.cat((tnt.cls_token.expand(batch, -1, -1), patches), dim=1)
        patches = patches + resample_abs_pos_embed(
            tnt.patch_pos, new_size=grid, old_size=embed.grid_size, num_prefix_tokens=1
        )
        patches = tnt.pos_drop(patches)

        maps = []
        for index, block in enumerate(tnt.blocks[: self.out_indices[-1] + 1]):
            pixels, patches = block(pixels, patches)
            if index in self.out_indices:
                tokens = tnt.norm(patches) if self.norm else patches
                maps.append(tokens[:, 1:].reshape(batch, *grid, -1).permute(0, 3, 1, 2).contiguous())
        return maps

    def library_filter_fn(self) -> Callable[[dict, nn.Module], dict]:
        return checkpoint_filter_fn


@BACKBONES.register("tnt_small")
def tnt_small(**kwargs) -> TNTBackbone:
    """TNT-S/16: 12 blocks, outer width 384, inner width 24, 23.4M parameters."""
    return TNTBackbone("tnt_s_patch16_224", **kwargs)
