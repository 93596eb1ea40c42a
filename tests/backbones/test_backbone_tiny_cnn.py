"""``tiny_cnn``: one map by default (DETR), chosen stages for multi-scale heads (RT-DETR)."""
from __future__ import annotations

import pytest
import torch

from densevit.backbones import create_backbone


def test_chosen_stages_have_the_declared_strides_and_channels():
    net = create_backbone("tiny_cnn", widths=(8, 16, 24, 32, 40), blocks=(0, 0, 1, 1, 1), out_indices=(2, 3, 4))
    maps = net(torch.randn(2, 3, 96, 160))
    assert net.strides == [8, 16, 32] and net.channels == [24, 32, 40]
    assert [tuple(m.shape) for m in maps] == [(2, c, 96 // s, 160 // s) for c, s in zip(net.channels, net.strides)]


def test_the_default_is_the_last_stage_and_unused_stages_are_not_built():
    default = create_backbone("tiny_cnn")
    assert default.strides == [16] and len(default(torch.randn(1, 3, 64, 64))) == 1
    early = create_backbone("tiny_cnn", out_indices=(1,))
    assert early.strides == [4] and len(early.body) == 2  # stages past the last one asked for are left out
    assert set(early.state_dict()) < set(default.state_dict())
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("tiny_cnn", out_indices=(4,))
