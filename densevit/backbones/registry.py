"""The backbone registry and its two entry points, ``create_backbone`` and ``list_backbones``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from densevit.backbones.base import Backbone
from densevit.registry import Registry

BACKBONES = Registry("backbone")


def create_backbone(name: str, pretrained: str | Path | None = None, **kwargs: Any) -> Backbone:
    """Build the registered backbone ``name``; ``pretrained`` is a local weight file, a weights
    name (``timm:<model>``, ``hf-hub:<org>/<repo>[/<file>]``, see :mod:`densevit.hub_weights`) or None.

    The network is always created with random weights first, then the weights, if given, are
    loaded with ``densevit.backbones.weights.load_pretrained``; only a named file is ever fetched.
    """
    from densevit.backbones.weights import load_pretrained

    backbone = BACKBONES.build(name, **kwargs)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return backbone


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, sorted, optionally filtered by a shell-style pattern."""
    return BACKBONES.names(pattern)
