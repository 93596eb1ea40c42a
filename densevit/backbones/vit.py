"""Plain ViT backbones (timm): chosen blocks as stride-16 maps, or ViTDet's simple pyramid.

``vit_tiny_patch16`` / ``vit_small_patch16`` / ``vit_base_patch16`` wrap timm's
``vit_*_patch16_224`` built with ``dynamic_img_size=True``: the position embeddings are
interpolated (bicubic) to the patch grid of each input, so any H, W divisible by 16 works
(32 with the stride-32 pyramid level).
"""
from __future__ import annotations

from typing import Callable, Sequence

import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES
from densevit.backbones.simple_pyramid import SimpleFeaturePyramid

PATCH_STRIDE = 16


def absolute_block_indices(indices: Sequence[int], depth: int) -> list[int]:
    """Block indices with negatives counted from the end (-1 = last), checked against ``depth``."""
    resolved = []
    for index in indices:
        if not -depth <= index < depth:
            raise ValueError(f"block index {index} is out of range for a {depth}-block transformer")
        resolved.append(index % depth)
    if resolved != sorted(set(resolved)):
        raise ValueError(f"out_indices must name distinct blocks in increasing order, got {list(indices)}")
    return resolved


class VisionTransformerBackbone(Backbone):
    """A timm ViT returning the outputs of chosen blocks as NCHW maps.

    forward(x: [B, 3, H, W]) ->
      * default: one [B, D, H/16, W/16] map per entry of ``out_indices`` (D = embed dim), each
        after the final LayerNorm when ``norm`` is true (the class token is dropped);
      * ``simple_fpn=True``: ViTDet's pyramid built from the single block in ``out_indices``:
        one [B, fpn_channels, H/s, W/s] map per s in ``fpn_strides`` (default 8, 16, 32).

    Keys: ``body.*`` are timm's ViT keys (``body.blocks.0.attn.qkv.weight``, ``body.pos_embed``);
    ``fpn.*`` the pyramid's.
    """

    def __init__(
        self,
        timm_name: str,
        out_indices: Sequence[int] = (-1,),
        norm: bool = True,
        simple_fpn: bool = False,
        fpn_channels: int = 256,
        fpn_strides: Sequence[int] = (8, 16, 32),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = timm.create_model(
            timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, drop_path_rate=drop_path_rate
        )
        self.out_indices = absolute_block_indices(out_indices, len(self.body.blocks))
        self.norm = norm
        width = self.body.embed_dim
        if simple_fpn:
            if len(self.out_indices) != 1:
                raise ValueError(f"simple_fpn is built from one block; got out_indices={list(out_indices)}")
            self.fpn = SimpleFeaturePyramid(width, fpn_channels, fpn_strides)
            self.channels = [fpn_channels] * len(self.fpn.strides)
            self.strides = list(self.fpn.strides)
        else:
            self.fpn = None
            self.channels = [width] * len(self.out_indices)
            self.strides = [PATCH_STRIDE] * len(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        maps = self.body.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, stop_early=True, intermediates_only=True
        )
        return self.fpn(maps[0]) if self.fpn is not None else maps

    def library_filter_fn(self) -> Callable[[dict, nn.Module], dict]:
        return checkpoint_filter_fn


@BACKBONES.register("vit_tiny_patch16")
def vit_tiny_patch16(**kwargs) -> VisionTransformerBackbone:
    """ViT-Ti/16 (DeiT-Ti): 12 blocks, width 192, 5.5M parameters."""
    return VisionTransformerBackbone("vit_tiny_patch16_224", **kwargs)


@BACKBONES.register("vit_small_patch16")
def vit_small_patch16(**kwargs) -> VisionTransformerBackbone:
    """ViT-S/16 (DeiT-S): 12 blocks, width 384, 21.7M parameters."""
    return VisionTransformerBackbone("vit_small_patch16_224", **kwargs)


@BACKBONES.register("vit_base_patch16")
def vit_base_patch16(**kwargs) -> VisionTransformerBackbone:
    """ViT-B/16: 12 blocks, width 768, 85.8M parameters."""
    return VisionTransformerBackbone("vit_base_patch16_224", **kwargs)
