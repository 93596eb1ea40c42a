"""The backbone registry and its two entry points, ``create_backbone`` and ``list_backbones``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from densevit.backbones.base import Backbone
from densevit.registry import Registry

BACKBONES = Registry("backbone")


def create_backbone(name: str, pretrained: str | Path | None = None, **kwargs: Any) -> Backbone:
    """Build the registered backbone ``name``; ``pretrained`` is a local weight file or None.

    The network is always created with random weights first (nothing is downloaded), then the
    file, if given, is loaded with ``densevit.backbones.weights.load_pretrained``.
    """
    from densevit.backbones.weights import load_pretrained

    backbone = BACKBONES.build(name, **kwargs)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return backbone


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, sorted, optionally filtered by a shell-style pattern."""
    return BACKBONES.names(pattern)
