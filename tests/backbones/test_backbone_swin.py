"""Swin: NCHW stages that agree with timm's fixed-size model, for square and non-square inputs."""
from __future__ import annotations

import timm
import torch
from backbone_helpers import image_batch, shared_backbone
from timm.models.swin_transformer import checkpoint_filter_fn

from densevit.backbones import create_backbone


def fixed_size_timm_swin(state: dict, img_size: tuple[int, int]):
    """timm's Swin-T built for exactly ``img_size`` (precomputed masks), with ``state`` loaded.

    Stages whose grid is smaller than a window get smaller windows there; timm's checkpoint
    filter resizes their relative-position tables.
    """
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=img_size)
    model.load_state_dict(checkpoint_filter_fn({k[len("body."):]: v for k, v in state.items()}, model))
    return model.eval()


def test_non_square_input_matches_timm_built_for_that_size() -> None:
    # Stages 1-3 see grids larger than one window (7) in both directions at 128x160 (32x40, 16x20,
    # 8x10: not whole windows), where a model built for that size uses the same windows and
    # shifts; its precomputed shifted-window masks must equal the ones the backbone builds for
    # the padded input on the fly. (Agreement at
    # 224x224 is checked with a timm checkpoint in test_backbone_weights.py.)
    ours = shared_backbone("swin_tiny")
    reference = fixed_size_timm_swin(ours.state_dict(), (128, 160))
    images = image_batch(1, 128, 160)
    with torch.no_grad():
        maps = ours(images)
        expected = reference.forward_intermediates(images, indices=[0, 1, 2], intermediates_only=True)
    for got, want in zip(maps[:3], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_always_partition_shifts_windows_at_every_stage() -> None:
    default = shared_backbone("swin_tiny")
    shifted = create_backbone("swin_tiny", always_partition=True).eval()
    shifted.load_state_dict(default.state_dict())
    images = image_batch(1, 64, 64)
    with torch.no_grad():
        plain, always = default(images), shifted(images)
    torch.testing.assert_close(always[0], plain[0])  # 16x16 grid: both shift by 3 in 7x7 windows
    assert not torch.allclose(always[3], plain[3])  # 2x2 grid: only always_partition shifts


def test_out_indices_choose_stages() -> None:
    with torch.device("meta"):
        backbone = create_backbone("swin_tiny", out_indices=(1, 3))
        maps = backbone(torch.empty(1, 3, 64, 96))
    assert backbone.channels == [192, 768] and backbone.strides == [8, 32]
    assert [tuple(m.shape) for m in maps] == [(1, 192, 8, 12), (1, 768, 2, 3)]


def test_relative_position_tables_skip_weight_decay() -> None:
    with torch.device("meta"):
        names = create_backbone("swin_tiny").no_weight_decay()
    assert len(names) == 2 + 2 + 6 + 2  # one table per block
    assert all(n.endswith("attn.relative_position_bias_table") for n in names)
