"""ResNet-D backbones (timm's ``resnet{18,34,50,101}d``), the ResNet-vd that RT-DETR detects with.

He et al., "Bag of Tricks" (2019): a deep stem (three 3x3 convs, 32-32-64 channels) instead of
one 7x7, and shortcuts that average-pool before their 1x1 conv instead of striding it. timm
builds it; two RT-DETR details are added here so that its published weights and parameter
counts carry over exactly:

* ``freeze_norm`` turns every BatchNorm into a ``FrozenBatchNorm2d`` (statistics and affine
  fixed, stored as buffers), and ``freeze_at`` stops gradients to the stem (0) and to the first
  ``freeze_at`` stages as well; RT-DETR-R50/R101 train with both, R18/R34 with neither;
* the first block of ResNet-18/34 has a 1x1 projection shortcut (conv + BN) even though its
  input and output widths are equal (RT-DETR's ``PResNet`` always projects in a stage's first
  block; timm uses the identity there).

``forward(x [B,3,H,W])`` returns the maps of ``out_indices`` (default layer2-4: strides 8, 16,
32; channels 128/256/512 for 18/34, 512/1024/2048 for 50/101). Keys are timm's under ``body.``
(``body.conv1.0.weight``, ``body.layer1.0.downsample.1.weight``), so timm's ``resnet*d``
ImageNet files load directly; any H, W works (maps are ceil(H / s) x ceil(W / s)).
"""
from __future__ import annotations

from typing import Sequence

import timm
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES

# timm's feature indices: 0 the stem (stride 2), 1-4 layer1-layer4 (strides 4-32)
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def frozen_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a ``FrozenBatchNorm2d`` holding its values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        replaced = frozen_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


class ResNetDBackbone(Backbone):
    """A timm ResNet-D returning chosen stages (see the module docstring).

    Args:
        timm_name: ``resnet18d`` ... ``resnet101d``.
        out_indices: timm feature indices, 2-4 = layer2-layer4.
        freeze_norm: BatchNorm -> FrozenBatchNorm2d.
        freeze_at: -1 trains everything; 0 freezes the stem; n > 0 the stem and layer1..layer n.
    """

    classifier_prefixes = ("fc.",)

    def __init__(self, timm_name: str, out_indices: Sequence[int] = (2, 3, 4), freeze_norm: bool = False,
                 freeze_at: int = -1) -> None:
        super().__init__()
        self.body = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=tuple(out_indices))
        first = self.body.layer1[0]
        if first.downsample is None:  # basic blocks: RT-DETR projects the first shortcut anyway
            width = first.conv1.in_channels
            first.downsample = nn.Sequential(nn.Identity(), nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        if freeze_norm:
            frozen_batch_norm(self.body)
        if freeze_at >= 0:
            for name in ("conv1", "bn1", *_STAGES[:freeze_at]):
                getattr(self.body, name).requires_grad_(False)
        info = self.body.feature_info
        self.channels = list(info.channels())
        self.strides = list(info.reduction())

    def forward(self, x):
        return self.body(x)


@BACKBONES.register("resnet18d")
def resnet18d(**kwargs) -> ResNetDBackbone:
    """ResNet-18-D (RT-DETR's R18vd; trainable BatchNorm): layer2-4 at strides 8/16/32, 11.2M parameters."""
    return ResNetDBackbone("resnet18d", **kwargs)


@BACKBONES.register("resnet34d")
def resnet34d(**kwargs) -> ResNetDBackbone:
    """ResNet-34-D (RT-DETR's R34vd; trainable BatchNorm): layer2-4 at strides 8/16/32, 21.3M parameters."""
    return ResNetDBackbone("resnet34d", **kwargs)


@BACKBONES.register("resnet50d")
def resnet50d(freeze_norm: bool = True, freeze_at: int = 0, **kwargs) -> ResNetDBackbone:
    """ResNet-50-D (RT-DETR's R50vd: frozen BatchNorm, frozen stem): layer2-4 at strides 8/16/32, 23.5M parameters."""
    return ResNetDBackbone("resnet50d", freeze_norm=freeze_norm, freeze_at=freeze_at, **kwargs)


@BACKBONES.register("resnet101d")
def resnet101d(freeze_norm: bool = True, freeze_at: int = 0, **kwargs) -> ResNetDBackbone:
    """ResNet-101-D (RT-DETR's R101vd: frozen BatchNorm, frozen stem): layer2-4 at strides 8/16/32, 42.5M parameters."""
    return ResNetDBackbone("resnet101d", freeze_norm=freeze_norm, freeze_at=freeze_at, **kwargs)
