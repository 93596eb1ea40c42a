"""TransUNet's encoder in the registry: its reference details, its weight layouts, its options.

Its outputs against an independent re-implementation of the reference are checked in
tests/segmentation/test_convert.py (converted checkpoints and Google ``.npz`` files).
"""
from __future__ import annotations

import logging

import pytest
import timm
import torch
from backbone_helpers import image_batch

from densevit.backbones import create_backbone
from densevit.errors import UserInputError

SMALL = {
    "img_size": (64, 64), "hidden": 64, "depth": 1, "num_heads": 2, "mlp_dim": 128, "resnet_layers": (1, 1, 1),
    "resnet_width": 32,
}


def test_short_skips_are_zero_padded_at_bottom_and_right() -> None:
    # The reference pools 3x3/2 without padding, so the stride-4 map comes out one row and one
    # column short and is zero-padded; timm's 'same' pool has no such rows.
    torch.manual_seed(0)
    backbone = create_backbone("r50_vit_b16", **SMALL).eval()
    with torch.no_grad():
        s2, s4, s8, s16 = backbone(image_batch(1, 32, 48))
    assert [tuple(m.shape) for m in (s2, s4, s8, s16)] == [(1, 32, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6), (1, 64, 2, 3)]
    assert s4[..., -1, :].abs().max() == 0 and s4[..., :, -1].abs().max() == 0
    assert (s4[..., :-1, :-1] > 0).float().mean() > 0.2
    assert (s8[..., -1, :] > 0).any()  # the stride-2 conv after it restores the full size


def test_position_embedding_is_stored_for_img_size_and_excluded_from_weight_decay() -> None:
    backbone = create_backbone("r50_vit_b16", **{**SMALL, "img_size": (64, 96)})
    assert backbone.pos_embed.shape == (1, 4 * 6, 64)
    assert backbone.no_weight_decay() == {"pos_embed"} <= dict(backbone.named_parameters()).keys()
    # another grid is interpolated from the stored one; the stored grid is used as it is
    assert backbone.position_embedding(4, 6) is backbone.pos_embed
    assert backbone.position_embedding(2, 3).shape == (1, 6, 64)


def test_more_input_channels() -> None:
    backbone = create_backbone("r50_vit_b16", in_chans=2, **SMALL)
    assert [m.shape[1] for m in backbone(torch.randn(1, 2, 32, 32))] == [32, 128, 256, 64]
    plain = create_backbone("vit_b16_transunet", in_chans=1, hidden=64, depth=1, num_heads=2, mlp_dim=128)
    assert plain.channels == [64] and plain.strides == [16]
    assert plain(torch.randn(1, 1, 32, 48))[0].shape == (1, 64, 2, 3)


@pytest.mark.parametrize(
    ("name", "timm_name"), [("r50_vit_b16", "vit_base_r50_s16_224"), ("vit_b16_transunet", "vit_base_patch16_224")]
)
def test_timm_checkpoint_maps_by_name(name: str, timm_name: str, tmp_path, caplog) -> None:
    # timm's R50+ViT-B/16 weights are Google's, renamed; every tensor has its place here. One
    # transformer block keeps the file small.
    reference = timm.create_model(timm_name, pretrained=False, depth=1)
    timm_state = reference.state_dict()
    path = tmp_path / "timm.pth"
    torch.save(timm_state, path)
    with caplog.at_level(logging.WARNING, logger="densevit.backbones.weights"):
        backbone = create_backbone(name, depth=1, pretrained=path)
    assert caplog.records == []  # every tensor matched; class token and classifier are dropped silently
    ours = backbone.state_dict()
    assert len(ours) == len([k for k in timm_state if k != "cls_token" and not k.startswith("head.")])
    torch.testing.assert_close(ours["pos_embed"], timm_state["pos_embed"][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(ours["blocks.0.attn.qkv.weight"], timm_state["blocks.0.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(ours["patch_embed.weight"], timm_state["patch_embed.proj.weight"], rtol=0, atol=0)
    if name == "r50_vit_b16":
        stage = "patch_embed.backbone.stages.2.blocks"
        pairs = {
            "stem.conv.weight": "patch_embed.backbone.stem.conv.weight",
            "stem.stages.2.8.norm3.bias": f"{stage}.8.norm3.bias",
            "stem.stages.2.0.downsample.weight": f"{stage}.0.downsample.conv.weight",
            "stem.stages.2.0.downsample_norm.weight": f"{stage}.0.downsample.norm.weight",
        }
        for mine, theirs in pairs.items():
            torch.testing.assert_close(ours[mine], timm_state[theirs], rtol=0, atol=0)


def test_npz_is_refused_by_other_backbones(tmp_path) -> None:
    path = tmp_path / "ViT-B_16.npz"
    path.write_bytes(b"")
    with pytest.raises(UserInputError, match="ViT-B_16.npz: a Google ViT .npz loads only into r50_vit_b16"):
        create_backbone("resnet18", pretrained=path)
    with pytest.raises(UserInputError, match="absent.npz: pretrained weights not found"):
        create_backbone("r50_vit_b16", pretrained=tmp_path / "absent.npz", **SMALL)
