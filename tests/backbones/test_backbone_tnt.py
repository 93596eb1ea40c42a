"""TNT: the backbone's any-size forward agrees with timm's fixed-size TNT.

(Agreement at 224x224 is checked with a timm checkpoint in test_backbone_weights.py.)
"""
from __future__ import annotations

import timm
import torch
from backbone_helpers import image_batch, shared_backbone
from timm.models.tnt import checkpoint_filter_fn

from densevit.backbones import create_backbone


def timm_tnt(state: dict, img_size: tuple[int, int]):
    """timm's TNT-S built for ``img_size``, loaded through timm's own checkpoint filter."""
    model = timm.create_model("tnt_s_patch16_224", pretrained=False, num_classes=0, img_size=img_size)
    model.load_state_dict(checkpoint_filter_fn({k[len("body."):]: v for k, v in state.items()}, model))
    return model.eval()


def timm_tokens_as_map(model, images: torch.Tensor) -> torch.Tensor:
    tokens = model.forward_features(images)[:, 1:]
    batch, _, height, width = images.shape
    return tokens.reshape(batch, height // 16, width // 16, -1).permute(0, 3, 1, 2)


def test_other_sizes_match_timm_with_resampled_patch_positions() -> None:
    ours = shared_backbone("tnt_small")
    reference = timm_tnt(ours.state_dict(), (64, 128))
    assert reference.patch_pos.shape[1] == 1 + 4 * 8
    images = image_batch(2, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(images)[0], timm_tokens_as_map(reference, images), rtol=1e-4, atol=1e-4)


def test_out_indices_choose_blocks() -> None:
    with torch.device("meta"):
        backbone = create_backbone("tnt_small", out_indices=(5, 11))
        maps = backbone(torch.empty(1, 3, 32, 64))
    assert backbone.channels == [384, 384] and backbone.strides == [16, 16]
    assert [tuple(m.shape) for m in maps] == [(1, 384, 2, 4)] * 2


def test_position_embeddings_skip_weight_decay() -> None:
    with torch.device("meta"):
        names = create_backbone("tnt_small").no_weight_decay()
    assert names == {"body.cls_token", "body.patch_pos", "body.pixel_pos"}
