"""R50+ViT-B/16 in timm's layers: CNN skips collected by hooks agree with timm's ResNetV2 and ViT code paths."""
from __future__ import annotations

import copy

import torch
from backbone_helpers import image_batch, shared_backbone


def test_skips_and_tokens_match_timm_forward_paths() -> None:
    backbone = shared_backbone("r50_vit_b16_timm")
    assert backbone.channels == [64, 256, 512, 768] and backbone.strides == [2, 4, 8, 16]
    images = image_batch(2, 64, 96)
    with torch.no_grad():
        maps = backbone(images)
        cnn = backbone.body.patch_embed.backbone
        cnn_maps = cnn.forward_intermediates(images, indices=[0, 1, 2], intermediates_only=True)
        tokens = backbone.body.forward_features(images)  # [B, N, 768] after the final norm, no class token
    for got, want in zip(maps[:3], cnn_maps):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(maps[3], tokens.reshape(2, 4, 6, 768).permute(0, 3, 1, 2))


def test_each_call_returns_its_own_skips() -> None:
    backbone = shared_backbone("r50_vit_b16_timm")
    first, second = image_batch(1, 32, 48, seed=1), image_batch(2, 48, 32, seed=2)
    with torch.no_grad():
        maps_first = backbone(first)
        maps_second = backbone(second)
        again = backbone(first)
    assert [tuple(m.shape) for m in maps_second] == [(2, 64, 24, 16), (2, 256, 12, 8), (2, 512, 6, 4), (2, 768, 3, 2)]
    for a, b in zip(maps_first, again):
        torch.testing.assert_close(a, b)


def test_a_deep_copy_collects_its_own_skips() -> None:
    # EMA and similar helpers deep-copy models; the copy's hooks must feed the copy
    backbone = shared_backbone("r50_vit_b16_timm")
    clone = copy.deepcopy(backbone)
    with torch.no_grad():
        clone.body.patch_embed.backbone.stem.conv.weight.mul_(2)
        images = image_batch(1, 32, 32)
        original, copied = backbone(images), clone(images)
    assert len(copied) == 4 and not torch.allclose(original[0], copied[0])
    torch.testing.assert_close(clone(images)[0], copied[0])


def test_transunet_layout_without_class_token() -> None:
    backbone = shared_backbone("r50_vit_b16_timm")
    assert backbone.body.cls_token is None
    assert backbone.body.pos_embed.shape == (1, 14 * 14, 768)
    assert backbone.no_weight_decay() == {"body.pos_embed"}
