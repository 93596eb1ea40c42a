"""The R50+ViT-B/16 hybrid as timm builds it (``vit_base_r50_s16_224``): ``r50_vit_b16_timm``.

This is the architecture of TransUNet's encoder with timm's layer details: 'same' padding of
the convs and the stem's max-pool, and timm's GroupNorm epsilons. It takes timm-format
weights; TransUNet's published checkpoints and Google's ``R50+ViT-B_16.npz`` reproduce their
outputs only on ``r50_vit_b16`` (``densevit.backbones.transunet_encoder``), which also loads
timm's keys by name.

Chen et al., "TransUNet" (2021) encode with the ViT paper's hybrid: a ResNetV2 root
(StdConv2d + GroupNorm, no pre-activation) with 3 stages of (3, 4, 9) bottleneck units maps the
image to a 1/16 grid of 1024 channels, a 1x1 projection makes it ViT-B/16's tokens, and 12
transformer blocks follow. The decoder needs the CNN's intermediate maps as skips; timm's
ResNetV2 lists them in its ``feature_info`` (the stem after GroupNorm+ReLU at stride 2,
``stages.0`` at 4, ``stages.1`` at 8), and timm's ``FeatureHooks`` collects them during the
one forward pass.

As in TransUNet there is no class token: ``pos_embed`` covers the patch grid only (resampled to
each input's grid, so any H, W divisible by 16 works). A timm / Google checkpoint with a class
token loads with that token and its position dropped, which is what TransUNet does.
"""
from __future__ import annotations

from typing import Callable

import timm
import torch
from timm.models import FeatureHooks
from timm.models.vision_transformer_hybrid import checkpoint_filter_fn
from torch import nn

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES

_SKIP_LEVELS = 3  # stem (stride 2), stages.0 (4), stages.1 (8)


class HybridViTBackbone(Backbone):
    """ResNetV2 + ViT encoder returning CNN skips and transformer tokens, ordered by stride.

    forward(x: [B, 3, H, W]) -> [s2: [B, 64, H/2, W/2], s4: [B, 256, H/4, W/4],
    s8: [B, 512, H/8, W/8], s16: [B, 768, H/16, W/16]]; the last is the tokens after the
    final LayerNorm.

    Keys: timm's hybrid ViT keys under ``body.`` (``body.patch_embed.backbone.stem.conv.weight``,
    ``body.patch_embed.backbone.stages.2.blocks.8.*``, ``body.patch_embed.proj.*``,
    ``body.pos_embed``, ``body.blocks.*``, ``body.norm.*``).
    """

    def __init__(self, timm_name: str, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.body = timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=0,
            global_pool="",  # no pooling head: nothing untrained hangs off the encoder
            class_token=False,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
        )
        cnn = self.body.patch_embed.backbone
        skips = cnn.feature_info[:_SKIP_LEVELS]
        self._skip_hooks = FeatureHooks([level["module"] for level in skips], cnn.named_modules())
        token_stride = self.body.patch_embed.feat_ratio()
        self.channels = [level["num_chs"] for level in skips] + [self.body.embed_dim]
        self.strides = [level["reduction"] for level in skips] + [token_stride]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        (tokens,) = self.body.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        skips = list(self._skip_hooks.get_output(x.device).values())
        return [*skips, tokens]

    def convert_library_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "cls_token" in state:
            state = {k: v for k, v in state.items() if k != "cls_token"}
            if "pos_embed" in state:
                state["pos_embed"] = state["pos_embed"][:, 1:]  # the class token's position comes first
        return super().convert_library_state_dict(state)

    def library_filter_fn(self) -> Callable[[dict, nn.Module], dict]:
        return checkpoint_filter_fn


@BACKBONES.register("r50_vit_b16_timm")
def r50_vit_b16_timm(**kwargs) -> HybridViTBackbone:
    """R50+ViT-B/16 hybrid in timm's padding and normalisation: 97.9M parameters."""
    return HybridViTBackbone("vit_base_r50_s16_224", **kwargs)
