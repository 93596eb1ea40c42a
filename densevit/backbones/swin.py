"""Swin Transformer backbones (timm): four stages at strides 4, 8, 16, 32, returned NCHW.

timm's Swin keeps its maps channels-last (NHWC); ``forward_intermediates`` returns them NCHW,
the one conversion. Built with ``dynamic_img_size=True``, it pads each stage to whole windows
and builds the shifted-window masks for the actual size, so any H, W divisible by 32 works,
square or not. Window sizes and shifts are those of the 224x224 model (window 7; the last
stage, 7x7 at 224, does not shift) unless ``always_partition=True`` asks for window 7 with
shift 3 at every stage, as the Swin detection code does.
"""
from __future__ import annotations

from typing import Callable, Sequence

import timm
import torch
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES


class SwinBackbone(Backbone):
    """A timm Swin returning chosen stages.

    forward(x: [B, 3, H, W]) -> [B, C_i, H/s_i, W/s_i] for stage i in ``out_indices``
    (default all: C = (1, 2, 4, 8) x embed dim, s = 4, 8, 16, 32). With ``norm`` the last
    stage passes through the final LayerNorm, the one the pretrained weights provide.

    Keys: timm's Swin keys under ``body.`` (``body.layers.0.blocks.0.attn.qkv.weight``).
    """

    def __init__(
        self,
        timm_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        norm: bool = True,
        always_partition: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=0,
            dynamic_img_size=True,
            always_partition=always_partition,
            drop_path_rate=drop_path_rate,
        )
        stages = self.body.feature_info
        self.out_indices = list(out_indices)
        if not self.out_indices or self.out_indices != sorted(set(self.out_indices)) or not all(
            0 <= i < len(stages) for i in self.out_indices
        ):
            raise ValueError(
                f"out_indices must be increasing stage indices in 0..{len(stages) - 1}, got {list(out_indices)}"
            )
        self.norm = norm
        self.channels = [stages[i]["num_chs"] for i in self.out_indices]
        self.strides = [stages[i]["reduction"] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        return self.body.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, stop_early=True, output_fmt="NCHW", intermediates_only=True
        )

    def library_filter_fn(self) -> Callable[[dict, nn.Module], dict]:
        return checkpoint_filter_fn


@BACKBONES.register("swin_tiny")
def swin_tiny(**kwargs) -> SwinBackbone:
    """Swin-T (patch 4, window 7): depths 2-2-6-2, widths 96-768, 27.5M parameters."""
    return SwinBackbone("swin_tiny_patch4_window7_224", **kwargs)


@BACKBONES.register("swin_small")
def swin_small(**kwargs) -> SwinBackbone:
    """Swin-S (patch 4, window 7): depths 2-2-18-2, widths 96-768, 48.8M parameters."""
    return SwinBackbone("swin_small_patch4_window7_224", **kwargs)


@BACKBONES.register("swin_base")
def swin_base(**kwargs) -> SwinBackbone:
    """Swin-B (patch 4, window 7): depths 2-2-18-2, widths 128-1024, 86.7M parameters."""
    return SwinBackbone("swin_base_patch4_window7_224", **kwargs)
