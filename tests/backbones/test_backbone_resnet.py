"""ResNet in DETR's layout: frozen BatchNorm, frozen stem and layer1, torchvision key names."""
from __future__ import annotations

import pytest
import torch
import torchvision
from backbone_helpers import image_batch
from torchvision.ops.misc import FrozenBatchNorm2d

from densevit.backbones import create_backbone


def test_stem_and_layer1_frozen_layer2_to_4_trained() -> None:
    with torch.device("meta"):
        backbone = create_backbone("resnet50")
    for name, parameter in backbone.named_parameters():
        # DETR (models/backbone.py): train only parameters whose name mentions layer2, layer3 or layer4
        should_train = any(layer in name for layer in ("layer2", "layer3", "layer4"))
        assert parameter.requires_grad == should_train, name
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules()) == 53


def test_keys_are_torchvision_resnet_keys_under_body() -> None:
    # DETR checkpoints hold the same trunk as backbone.0.body.<torchvision key>
    with torch.device("meta"):
        backbone = create_backbone("resnet50")
        reference = torchvision.models.resnet50(weights=None)
    expected = {
        f"body.{k}" for k in reference.state_dict() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert set(backbone.state_dict()) == expected
    assert hasattr(backbone.body, "layer4") and not hasattr(backbone.body, "fc")


def test_frozen_batchnorm_ignores_train_mode() -> None:
    backbone = create_backbone("resnet18")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = image_batch(2, 64, 64)
    with torch.no_grad():
        trained = backbone.train()(images)[0]
        evaluated = backbone.eval()(images)[0]
    torch.testing.assert_close(trained, evaluated)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_matches_torchvision_resnet_with_the_same_weights() -> None:
    backbone = create_backbone("resnet18").eval()
    reference = torchvision.models.resnet18(weights=None).eval()
    missing, unexpected = reference.load_state_dict(
        {k[len("body."):]: v for k, v in backbone.state_dict().items()}, strict=False
    )
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    images = image_batch(1, 64, 96)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(reference.children())[:-2])  # up to layer4
        torch.testing.assert_close(backbone(images)[0], trunk(images), rtol=1e-4, atol=1e-4)


def test_return_layers_give_strides_8_16_32() -> None:
    backbone = create_backbone("resnet18", return_layers=("layer2", "layer3", "layer4"))
    assert backbone.channels == [128, 256, 512] and backbone.strides == [8, 16, 32]
    with torch.no_grad():
        maps = backbone(image_batch(2, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]


def test_dilation_keeps_layer4_at_stride_16() -> None:
    with torch.device("meta"):
        backbone = create_backbone("resnet50", return_layers=("layer3", "layer4"), dilation=True)
        maps = backbone(torch.empty(1, 3, 64, 96))
    assert backbone.channels == [1024, 2048] and backbone.strides == [16, 16]
    assert [tuple(m.shape) for m in maps] == [(1, 1024, 4, 6), (1, 2048, 4, 6)]


def test_bad_options_are_rejected() -> None:
    with torch.device("meta"):
        with pytest.raises(ValueError, match="return_layers"):
            create_backbone("resnet50", return_layers=("layer5",))
        with pytest.raises(ValueError, match="return_layers"):
            create_backbone("resnet50", return_layers=("layer4", "layer2"))
        with pytest.raises(ValueError, match="cannot dilate"):
            create_backbone("resnet18", dilation=True)
