"""Plain ViT: agreement with timm's own forward, position-embedding interpolation, options."""
from __future__ import annotations

import pytest
import timm
import torch
from backbone_helpers import image_batch, shared_backbone
from timm.models.vision_transformer import checkpoint_filter_fn

from densevit.backbones import create_backbone


def timm_tokens_as_map(model, images: torch.Tensor) -> torch.Tensor:
    """timm's ``forward_features`` (final norm included) without the class token, as [B, D, H/16, W/16]."""
    tokens = model.forward_features(images)[:, model.num_prefix_tokens :]
    batch, _, height, width = images.shape
    return tokens.reshape(batch, height // 16, width // 16, -1).permute(0, 3, 1, 2)


def test_matches_timm_at_the_training_size() -> None:
    ours = shared_backbone("vit_tiny_patch16")
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    reference.load_state_dict({k[len("body."):]: v for k, v in ours.state_dict().items()})
    images = image_batch(1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(images)[0], timm_tokens_as_map(reference, images))


def test_position_embeddings_are_interpolated_for_other_sizes() -> None:
    # timm's checkpoint filter resamples pos_embed for a model built at the new size; the
    # backbone must do the same on the fly for an input of that size.
    ours = shared_backbone("vit_tiny_patch16")
    body_state = {k[len("body."):]: v for k, v in ours.state_dict().items()}
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=(64, 128)).eval()
    reference.load_state_dict(checkpoint_filter_fn(body_state, reference))
    assert reference.pos_embed.shape[1] == 1 + 4 * 8
    images = image_batch(2, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(images)[0], timm_tokens_as_map(reference, images), rtol=1e-4, atol=1e-4)


def test_out_indices_choose_blocks() -> None:
    backbone = create_backbone("vit_tiny_patch16", out_indices=(3, 7, -1)).eval()
    default = shared_backbone("vit_tiny_patch16")
    backbone.load_state_dict(default.state_dict())
    images = image_batch(1, 32, 48)
    with torch.no_grad():
        maps = backbone(images)
        torch.testing.assert_close(maps[-1], default(images)[0])
    assert backbone.channels == [192, 192, 192] and backbone.strides == [16, 16, 16]
    assert len(maps) == 3 and not torch.allclose(maps[0], maps[1])


@pytest.mark.parametrize("out_indices", [(12,), (5, 3), (2, 2)])
def test_bad_out_indices_are_rejected(out_indices) -> None:
    with torch.device("meta"), pytest.raises(ValueError):
        create_backbone("vit_tiny_patch16", out_indices=out_indices)


def test_simple_feature_pyramid_shapes_and_gradients() -> None:
    backbone = create_backbone("vit_tiny_patch16", simple_fpn=True)
    assert backbone.channels == [256, 256, 256] and backbone.strides == [8, 16, 32]
    maps = backbone(image_batch(2, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 256, 8, 12), (2, 256, 4, 6), (2, 256, 2, 3)]
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is not None for p in backbone.fpn.parameters())
    assert backbone.body.blocks[0].attn.qkv.weight.grad is not None


def test_simple_feature_pyramid_options() -> None:
    backbone = create_backbone("vit_tiny_patch16", simple_fpn=True, fpn_channels=64, fpn_strides=(4, 8, 16, 32))
    with torch.no_grad():
        maps = backbone(image_batch(1, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 16, 16), (1, 64, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2)]
    with pytest.raises(ValueError, match="divisible by 32"):
        backbone(image_batch(1, 48, 64))
    with torch.device("meta"):
        with pytest.raises(ValueError, match="among 4, 8, 16, 32"):
            create_backbone("vit_tiny_patch16", simple_fpn=True, fpn_strides=(8, 64))
        with pytest.raises(ValueError, match="one block"):
            create_backbone("vit_tiny_patch16", simple_fpn=True, out_indices=(5, 11))


def test_position_embedding_and_class_token_skip_weight_decay() -> None:
    with torch.device("meta"):
        assert create_backbone("vit_tiny_patch16").no_weight_decay() == {"body.pos_embed", "body.cls_token"}
