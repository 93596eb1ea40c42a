"""The backbone contract, checked for every registered backbone.

For a [B, 3, H, W] batch each backbone returns NCHW maps [B, channels[i], H / strides[i],
W / strides[i]]; batch items are independent; any H, W the largest stride divides works,
square or not; gradients reach every trainable parameter.

The 224x320 shape check runs every backbone on PyTorch's meta device (shapes without
arithmetic), so it covers the large ones in the default run; the same check with real
arithmetic runs the small backbones by default and the large ones under ``-m slow``.
"""
from __future__ import annotations

import pytest
import torch
from backbone_helpers import ALL_BACKBONES, by_size, image_batch, shared_backbone

from densevit.backbones import create_backbone


def expected_shapes(backbone, batch: int, height: int, width: int) -> list[tuple[int, ...]]:
    return [(batch, c, height // s, width // s) for c, s in zip(backbone.channels, backbone.strides)]


@pytest.mark.parametrize("name", ALL_BACKBONES)
@pytest.mark.parametrize("batch", [1, 2])
def test_shapes_at_224x320_on_meta_device(name: str, batch: int) -> None:
    with torch.device("meta"):
        backbone = create_backbone(name)
        maps = backbone(torch.empty(batch, 3, 224, 320))
    assert [tuple(m.shape) for m in maps] == expected_shapes(backbone, batch, 224, 320)


@pytest.mark.parametrize("name", by_size(ALL_BACKBONES))
def test_maps_at_224x320_for_batches_of_two_and_one(name: str) -> None:
    backbone = shared_backbone(name)
    assert len(backbone.channels) == len(backbone.strides) > 0
    assert backbone.strides == sorted(backbone.strides)
    images = image_batch(2, 224, 320)
    with torch.no_grad():
        pair = backbone(images)
        single = backbone(images[:1])
    assert isinstance(pair, list)
    assert [tuple(m.shape) for m in pair] == expected_shapes(backbone, 2, 224, 320)
    assert [tuple(m.shape) for m in single] == expected_shapes(backbone, 1, 224, 320)
    assert all(m.is_contiguous() and torch.isfinite(m).all() for m in pair)
    for one, two in zip(single, pair):  # batch items are computed independently
        torch.testing.assert_close(one[0], two[0], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(two[0], two[1])  # the two images differ, so must their maps


@pytest.mark.parametrize("name", by_size(ALL_BACKBONES))
@pytest.mark.parametrize("size", [(64, 128), (96, 32)])
def test_other_sizes_square_or_not(name: str, size: tuple[int, int]) -> None:
    backbone = shared_backbone(name)
    with torch.no_grad():
        maps = backbone(image_batch(1, *size))
    assert [tuple(m.shape) for m in maps] == expected_shapes(backbone, 1, *size)


@pytest.mark.parametrize("name", by_size(ALL_BACKBONES))
def test_gradients_reach_every_trainable_parameter(name: str) -> None:
    backbone = shared_backbone(name)
    images = image_batch(1, 64, 96).requires_grad_(True)
    try:
        maps = backbone.train()(images)
        sum(m.square().mean() for m in maps).backward()
        trainable = {n: p for n, p in backbone.named_parameters() if p.requires_grad}
        # zero-initialised residual branches (timm's ResNetV2) legitimately get all-zero
        # gradients at initialisation, so the check is "a gradient arrived", plus a non-zero total
        assert trainable and [n for n, p in trainable.items() if p.grad is None] == []
        assert sum(p.grad.abs().sum() for p in trainable.values()) > 0
        assert images.grad is not None and images.grad.abs().sum() > 0
        assert [n for n, p in backbone.named_parameters() if not p.requires_grad and p.grad is not None] == []
    finally:
        backbone.eval().zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "swin_tiny", "tnt_small"])
def test_sizes_the_largest_stride_does_not_divide_are_rejected(name: str) -> None:
    backbone = shared_backbone(name)
    stride = max(backbone.strides)
    with pytest.raises(ValueError, match=f"divisible by {stride}"):
        backbone(image_batch(1, stride * 2, stride * 2 + 8))


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_no_weight_decay_names_real_parameters(name: str) -> None:
    with torch.device("meta"):
        backbone = create_backbone(name)
    names = dict(backbone.named_parameters())
    assert backbone.no_weight_decay() <= names.keys()
