"""TransUNet shapes, sizes and gradients over the encoders it is registered with."""
from __future__ import annotations

import pytest
import torch

from densevit.models import create_model
from densevit.segmentation.decoder import CascadedUpsampler

SMALL_HYBRID = dict(img_size=[64, 64], hidden=64, depth=1, num_heads=2, mlp_dim=128, resnet_layers=[1, 1, 1],
                    resnet_width=32, head_channels=64, decoder_channels=[32, 32, 16, 16])


def test_r50_vitb16_has_the_reference_parameter_count():
    model = create_model("transunet_r50_vitb16", num_classes=9)
    count = sum(p.numel() for p in model.parameters())
    # Beckschen/TransUNet's R50-ViT-B_16 with 9 classes at 224x224: 105,276,066 parameters
    # (105,277,081 here: the head's conv has its bias, and Synapse-size position embedding).
    assert 105.0e6 < count < 105.6e6


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 48)])
def test_hybrid_non_square_inputs_and_gradients(size):
    model = create_model("transunet_r50_vitb16", num_classes=4, **SMALL_HYBRID)
    x = torch.randn(2, 3, *size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 4, *size)
    logits.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("n_skip", [0, 1, 2, 3])
def test_n_skip_selects_skips_deepest_first(n_skip):
    decoder = CascadedUpsampler(96, [64, 32, 16], [32, 16, 8, 8], n_skip, head_channels=48)
    in_channels = [block.conv1[0].in_channels for block in decoder.blocks]
    expected_skips = [64, 32, 16, 0][:n_skip] + [0] * (4 - n_skip)
    assert in_channels == [a + b for a, b in zip([48, 32, 16, 8], expected_skips)]
    deepest = torch.randn(1, 96, 4, 6)
    skips = [torch.randn(1, 64, 8, 12), torch.randn(1, 32, 16, 24), torch.randn(1, 16, 32, 48)]
    assert decoder(deepest, skips).shape == (1, 8, 64, 96)


def test_grey_input_is_repeated_for_rgb_encoders_and_multichannel_encoders_take_their_channels():
    model = create_model("transunet_r50_vitb16", num_classes=3, **SMALL_HYBRID).eval()
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(grey), model(grey.expand(-1, 3, -1, -1)))
    two = create_model("transunet_r50_vitb16", num_classes=3, in_chans=2, **SMALL_HYBRID)
    assert two(torch.randn(1, 2, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name, size", [("transunet_vit_t16", (64, 96)), ("transunet_swin_t", (64, 96))])
def test_registry_backbones(name, size):
    model = create_model(name, num_classes=5)
    logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, 5, *size)
    logits.mean().backward()




def test_bad_decoder_settings_name_the_config_key():
    from densevit.errors import UserInputError

    with pytest.raises(UserInputError, match="model.kwargs.n_skip"):
        create_model("transunet_r50_vitb16", num_classes=2, **{**SMALL_HYBRID, "n_skip": 4})
    with pytest.raises(UserInputError, match="model.kwargs.decoder_channels"):
        create_model("transunet_r50_vitb16", num_classes=2, **{**SMALL_HYBRID, "decoder_channels": [8, 8]})
