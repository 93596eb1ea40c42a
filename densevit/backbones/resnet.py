"""ResNet backbones in DETR's layout (torchvision ResNet, FrozenBatchNorm2d, stem and layer1 frozen).

As in facebookresearch/detr ``models/backbone.py``: every BatchNorm is a
``torchvision.ops.misc.FrozenBatchNorm2d`` (statistics and affine fixed, so small detection
batches cannot disturb them), the stem (``conv1``) and ``layer1`` get no gradients, and
``layer2``-``layer4`` are trained. The trunk is a torchvision
``IntermediateLayerGetter`` kept as ``body``, so the state-dict keys are torchvision's ResNet
keys under ``body.``::

    body.conv1.weight, body.bn1.{weight,bias,running_mean,running_var},
    body.layer{1..4}.{block}.conv{1,2,3}.weight, body.layer{1..4}.{block}.bn{1,2,3}.*,
    body.layer{1..4}.0.downsample.{0,1}.*

DETR checkpoints store the same trunk as ``backbone.0.body.*``: replacing the prefix
``backbone.0.`` with ``""`` gives our keys. torchvision / timm ImageNet ResNet files load
directly (their ``fc.*`` classifier is dropped).

Unlike the transformer backbones, a ResNet takes any H, W; each map is ceil(H / s) x ceil(W / s).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES

TRAINED_LAYERS = ("layer2", "layer3", "layer4")
_LAYER_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


class ResNetBackbone(Backbone):
    """A torchvision ResNet trunk returning chosen layers.

    forward(x: [B, 3, H, W]) -> [B, C_l, H/s_l, W/s_l] for each layer l in ``return_layers``
    (default ``("layer4",)``: 2048 channels at stride 32 for ResNet-50/101, 512 for ResNet-18).
    ``dilation=True`` replaces layer4's stride by dilation (DETR-DC5): layer4 at stride 16.
    """

    classifier_prefixes = ("fc.",)

    def __init__(self, arch: str, return_layers: Sequence[str] = ("layer4",), dilation: bool = False) -> None:
        super().__init__()
        return_layers = list(return_layers)
        if not return_layers or return_layers != sorted(set(return_layers)) or not set(return_layers) <= set(
            _LAYER_STRIDES
        ):
            raise ValueError(
                f"return_layers must be increasing names among {list(_LAYER_STRIDES)}, got {return_layers}"
            )
        if dilation and arch in ("resnet18", "resnet34"):
            raise ValueError(f"{arch} has basic blocks, which torchvision cannot dilate; use resnet50 or resnet101")
        net = getattr(torchvision.models, arch)(
            weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, dilation]
        )
        for name, parameter in net.named_parameters():
            if not name.startswith(TRAINED_LAYERS):
                parameter.requires_grad_(False)
        self.body = IntermediateLayerGetter(net, return_layers={name: name for name in return_layers})
        strides = dict(_LAYER_STRIDES, layer4=16 if dilation else 32)
        self.channels = [self._out_channels(getattr(net, name)) for name in return_layers]
        self.strides = [strides[name] for name in return_layers]

    @staticmethod
    def _out_channels(layer: torch.nn.Sequential) -> int:
        last_block = layer[-1]
        last_conv = last_block.conv3 if hasattr(last_block, "conv3") else last_block.conv2
        return last_conv.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())


@BACKBONES.register("resnet18")
def resnet18(**kwargs) -> ResNetBackbone:
    """ResNet-18 trunk (no fc): 11.2M parameters."""
    return ResNetBackbone("resnet18", **kwargs)


@BACKBONES.register("resnet50")
def resnet50(**kwargs) -> ResNetBackbone:
    """ResNet-50 trunk (no fc), DETR's default: 23.5M parameters."""
    return ResNetBackbone("resnet50", **kwargs)


@BACKBONES.register("resnet101")
def resnet101(**kwargs) -> ResNetBackbone:
    """ResNet-101 trunk (no fc): 42.5M parameters."""
    return ResNetBackbone("resnet101", **kwargs)
