"""Backbones: image batch -> list of NCHW feature maps, with ``.channels`` and ``.strides``.

``create_backbone(name, pretrained=None, **kw)`` builds one by name (``list_backbones()`` gives
the names); ``pretrained`` is a local weight file in our key layout or the library's (see
``densevit.backbones.weights``), or a weights name (``timm:<model>``, ``hf-hub:<org>/<repo>``,
see :mod:`densevit.hub_weights`), the only thing ever downloaded. Every timm network is created
with ``pretrained=False`` and then loaded through the one weights path.

Families (each module registers its names when imported here):
  * ``vit``: vit_tiny_patch16, vit_small_patch16, vit_base_patch16 (optional ViTDet pyramid);
  * ``swin``: swin_tiny, swin_small, swin_base;
  * ``cswin``: cswin_tiny, cswin_small, cswin_base (official CSWin keys; optional ImageNet ``head``);
  * ``tnt``: tnt_small;
  * ``resnet``: resnet18, resnet50, resnet101 (FrozenBatchNorm2d, DETR's layout);
  * ``resnet_d``: resnet18d, resnet34d, resnet50d, resnet101d (timm's ResNet-D, RT-DETR's ResNet-vd);
  * ``transunet_encoder``: r50_vit_b16 (TransUNet's encoder, exactly as the reference computes
    it; also takes Google's ``.npz``), vit_b16_transunet (its plain-ViT variant);
  * ``hybrid``: r50_vit_b16_timm (the same hybrid in timm's padding and normalisation);
  * ``tiny_cnn``: tiny_cnn (a small CNN with trainable batch norm, for training from scratch).
"""
from __future__ import annotations

from densevit.backbones import (  # noqa: F401  (importing a family registers its backbones)
    cswin,
    hybrid,
    resnet,
    resnet_d,
    swin,
    tiny_cnn,
    tnt,
    transunet_encoder,
    vit,
)
from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES, create_backbone, list_backbones

__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones"]
