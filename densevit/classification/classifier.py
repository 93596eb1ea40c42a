"""The classifier: a registry backbone's pooled feature and one linear layer.

``Classifier(backbone, num_classes)(x: [B,3,H,W]) -> logits [B, num_classes]``. With a timm
ViT / Swin / TNT, a CSWin or a torchvision / timm ResNet backbone and the ImageNet head loaded
(:meth:`Classifier.load_library_head`), the logits are the library model's own.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from densevit.backbones.base import Backbone
from densevit.classification.pooling import head_from_library, pooler_for
from densevit.errors import note
from densevit.weights import read_weights, state_dict_of


class Classifier(nn.Module):
    """Pooled backbone feature [B, D] -> dropout -> ``head`` (Linear D -> K) -> logits [B, K].

    Keys: ``backbone.*`` (the registry backbone's own keys) and ``head.weight`` / ``head.bias``.
    For layer-wise learning-rate decay the model numbers its parameters' layers
    (:meth:`layer_id`, ``num_layers``; ``num_layers`` is 0 for backbones without numbered blocks).
    """

    backbone_prefixes = ("backbone.",)
    classifier_prefixes = ("head.",)

    def __init__(self, backbone: Backbone, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.backbone = backbone
        self.pooler = pooler_for(backbone)
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.pooler.dim, num_classes)
        # timm's classifier initialisation: ImageNet-style fine-tuning starts from small logits
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        blocks = self.pooler.num_blocks(backbone)
        self.num_layers = blocks + 2 if blocks else 0  # stem, blocks, final norm + head

    def features(self, x: Tensor) -> Tensor:
        """The pooled feature [B, D] of images [B, 3, H, W]."""
        return self.pooler(self.backbone, x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, num_classes] of images [B, 3, H, W]."""
        return self.head(self.head_drop(self.features(x)))

    def no_weight_decay(self) -> set[str]:
        """None of the classifier's own parameters (the backbone lists its tables itself)."""
        return set()

    def layer_id(self, name: str) -> int:
        """Layer of parameter ``name`` in ``0 .. num_layers - 1`` (BEiT's numbering: 0 the patch
        embedding and tokens, ``i + 1`` block ``i``, the last the final norm and the head)."""
        if not self.num_layers:
            raise ValueError(f"{type(self.backbone).__name__} has no numbered blocks for layer decay")
        top, body = self.num_layers - 1, f"backbone.{self.pooler.body}"
        if not name.startswith(body):
            return top
        return self.pooler.layer_id(name.removeprefix(body), top - 1)

    def load_library_head(self, path: str | Path) -> bool:
        """Take the ImageNet head of the library weight file ``path`` when its class count is ours.

        Returns whether it did; otherwise the head stays freshly initialised, with a note.
        """
        state = state_dict_of(read_weights(path, "pretrained weights"), path)
        found = head_from_library(state, self.pooler)
        if found is None:
            note(f"{path}: no classifier head in the file: the {self.num_classes}-class head starts fresh")
            return False
        weight, bias = found
        if tuple(weight.shape) != tuple(self.head.weight.shape):
            note(f"{path}: the file's head has {weight.shape[0]} classes, the model {self.num_classes}: "
                 "the head starts fresh")
            return False
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        return True
