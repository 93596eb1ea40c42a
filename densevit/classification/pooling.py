"""How each backbone family turns an image batch into one feature vector per image.

A classifier needs the network's own pooled feature, the one its ImageNet head was trained
on, not the NCHW maps the dense heads take:

* timm ViT: the class token after the final norm (timm's ``forward_features`` +
  ``forward_head(pre_logits=True)``; the backbone wrapper drops the class token, so it is
  not used here);
* timm Swin: the average of the last stage after the final norm (timm's forward, likewise);
* TNT: the class token after the final norm, taken from the wrapper's own forward (timm's
  TNT accepts 224x224 only; the wrapper runs the same layers at any size);
* CSWin: the average of the last stage after the final norm (the official classifier's
  ``forward_features``), head ``head``; blocks numbered across stages;
* anything else (ResNet, ResNet-D, hybrids, tiny_cnn): the global average of the last map, as
  torchvision's and timm's CNN heads pool.

Each pooler also names the key prefix of the library's ImageNet head (so a timm or
torchvision file can give the classifier its head) and, for transformers, which block each
parameter belongs to (for layer-wise learning-rate decay).
"""
from __future__ import annotations

import re

from torch import Tensor

from densevit.backbones.base import Backbone
from densevit.backbones.cswin import CSWinBackbone
from densevit.backbones.resnet import ResNetBackbone
from densevit.backbones.resnet_d import ResNetDBackbone
from densevit.backbones.swin import SwinBackbone
from densevit.backbones.tnt import TNTBackbone
from densevit.backbones.vit import VisionTransformerBackbone

# body-relative prefixes after the last block: the final norm (timm's ``fc_norm`` when it pools by average)
_TOP = ("norm.", "fc_norm.", "head.")


class Pooler:
    """Average of the last feature map: ``pool(backbone, x: [B,3,H,W]) -> [B, channels[-1]]``."""

    library_head = ""  # key prefix of the library's classifier in its weight files ("" = none known)
    body = "body."  # where the library model's own keys start inside the backbone
    _block = re.compile(r"$^")  # body-relative names of the numbered blocks (none: no layer decay)

    def __init__(self, backbone: Backbone) -> None:
        self.dim = backbone.channels[-1]

    def __call__(self, backbone: Backbone, x: Tensor) -> Tensor:
        return backbone(x)[-1].mean(dim=(-2, -1))

    def num_blocks(self, backbone: Backbone) -> int:
        """Blocks counted for layer decay; 0 when the family has no such numbering."""
        return 0

    def layer_id(self, body_name: str, num_blocks: int) -> int:
        """Layer of a parameter of ``backbone.body`` (BEiT's numbering): 0 the stem (patch
        embedding, tokens, position tables), ``i + 1`` block ``i``, ``num_blocks + 1`` the final norm."""
        if body_name.startswith(_TOP):
            return num_blocks + 1
        index = self.block_index(body_name)
        return 0 if index is None else index + 1

    def block_index(self, body_name: str) -> int | None:
        """0-based block of a body parameter; None outside the blocks."""
        match = self._block.match(body_name)
        return int(match.group(1)) if match else None


class LibraryCNNPooler(Pooler):
    """torchvision ResNet / timm ResNet-D: average pool of the last stage, head ``fc``."""

    library_head = "fc."


class ViTPooler(Pooler):
    """timm ViT: class token after the final norm, exactly timm's ``forward_head(pre_logits=True)``."""

    library_head = "head."
    _block = re.compile(r"blocks\.(\d+)\.")

    def __init__(self, backbone: Backbone) -> None:
        self.dim = backbone.body.num_features

    def __call__(self, backbone: Backbone, x: Tensor) -> Tensor:
        backbone.check_input(x)
        return backbone.body.forward_head(backbone.body.forward_features(x), pre_logits=True)

    def num_blocks(self, backbone: Backbone) -> int:
        return len(backbone.body.blocks)


class SwinPooler(ViTPooler):
    """timm Swin: average of the normed last stage (timm's forward); blocks numbered across stages."""

    library_head = "head.fc."
    _block = re.compile(r"layers\.(\d+)\.(?:blocks\.(\d+)|downsample)\.")

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone)
        depths = [len(stage.blocks) for stage in backbone.body.layers]
        self._first = [sum(depths[:i]) for i in range(len(depths))]
        self._total = sum(depths)

    def num_blocks(self, backbone: Backbone) -> int:
        return self._total

    def block_index(self, body_name: str) -> int | None:
        match = self._block.match(body_name)
        if not match:
            return None
        # a stage's patch merging (``downsample``) runs first in timm's stage: its first block's layer
        return self._first[int(match.group(1))] + int(match.group(2) or 0)


class CSWinPooler(Pooler):
    """CSWin: the normed last stage averaged (the official ``forward_features``), head ``head``;
    blocks numbered across stages, a stage's merge counted with its first block."""

    library_head = "head."
    body = ""  # CSWin's keys are the official ones, straight under the backbone
    _block = re.compile(r"(?:stage(\d)\.(\d+)|merge(\d))\.")

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone)
        depths = [len(getattr(backbone, f"stage{i}")) for i in range(1, 5)]
        self._first = [sum(depths[:i]) for i in range(len(depths))]
        self._total = sum(depths)

    def __call__(self, backbone: Backbone, x: Tensor) -> Tensor:
        return backbone.pooled_features(x)

    def num_blocks(self, backbone: Backbone) -> int:
        return self._total

    def block_index(self, body_name: str) -> int | None:
        match = self._block.match(body_name)
        if not match:
            return None
        if match.group(3):  # merge{s} leads into stage s + 1 (1-based): that stage's first block
            return self._first[int(match.group(3))]
        return self._first[int(match.group(1)) - 1] + int(match.group(2))


class TNTPooler(ViTPooler):
    """TNT: the class token of the final norm's output in the wrapper's forward (any input size)."""

    def __call__(self, backbone: Backbone, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        hook = backbone.body.norm.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            backbone(x)
        finally:
            hook.remove()
        return captured[-1][:, 0]


def pooler_for(backbone: Backbone) -> Pooler:
    """The pooler of ``backbone``'s family (see the module docstring)."""
    if isinstance(backbone, TNTBackbone):
        return TNTPooler(backbone)
    if isinstance(backbone, CSWinBackbone):
        return CSWinPooler(backbone)
    if isinstance(backbone, SwinBackbone):
        return SwinPooler(backbone)
    if isinstance(backbone, VisionTransformerBackbone):
        return ViTPooler(backbone)
    if isinstance(backbone, (ResNetBackbone, ResNetDBackbone)):
        return LibraryCNNPooler(backbone)
    return Pooler(backbone)


def head_from_library(state: dict[str, Tensor], pooler: Pooler) -> tuple[Tensor, Tensor] | None:
    """The library head's ``(weight [K, D], bias [K])`` in a timm / torchvision state dict, if it has one."""
    prefix = pooler.library_head
    weight, bias = state.get(f"{prefix}weight"), state.get(f"{prefix}bias")
    if not prefix or weight is None or bias is None or weight.dim() != 2:
        return None
    return weight, bias

