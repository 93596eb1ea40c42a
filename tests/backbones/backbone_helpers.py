"""Helpers for the backbone tests: one instance per registered name, built once per session.

Building the large backbones (ViT-B, Swin-B, R50+ViT-B) costs seconds on CPU, so tests that
only run them share one instance; tests that change weights or modes build their own.
"""
from __future__ import annotations

import functools

import pytest
import torch

from densevit.backbones import Backbone, create_backbone, list_backbones

ALL_BACKBONES = list_backbones()
# Forward passes of these take seconds each on CPU; their full checks run with -m slow.
LARGE_BACKBONES = {
    "vit_small_patch16", "vit_base_patch16", "swin_small", "swin_base", "resnet50", "resnet101", "resnet50d", "resnet101d", "r50_vit_b16",
    "r50_vit_b16_timm", "vit_b16_transunet", "cswin_small", "cswin_base",
}


def by_size(names: list[str]) -> list:
    """``names`` as pytest params, the large ones marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in LARGE_BACKBONES else n for n in names]


@functools.lru_cache(maxsize=None)
def shared_backbone(name: str) -> Backbone:
    """An eval-mode instance of ``name`` with fixed random weights, shared between tests."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_backbone(name).eval()


def image_batch(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """A reproducible normalised-image-like batch [batch, 3, height, width]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)
