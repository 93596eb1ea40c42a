"""The registry: names, close-match errors, parameter counts, and no network access."""
from __future__ import annotations

import socket

import pytest
import torch
from backbone_helpers import ALL_BACKBONES, LARGE_BACKBONES

from densevit.backbones import BACKBONES, create_backbone, list_backbones
from densevit.registry import UnknownNameError

EXPECTED_NAMES = [
    "cswin_base",
    "cswin_small",
    "cswin_tiny",
    "r50_vit_b16",
    "r50_vit_b16_timm",
    "resnet101",
    "resnet101d",
    "resnet18",
    "resnet18d",
    "resnet34d",
    "resnet50",
    "resnet50d",
    "swin_base",
    "swin_small",
    "swin_tiny",
    "tiny_cnn",
    "tnt_small",
    "vit_b16_transunet",
    "vit_base_patch16",
    "vit_small_patch16",
    "vit_tiny_patch16",
]

# Published parameter counts in millions, and whether that count includes a 1000-class
# ImageNet classifier (which a backbone does not have: it is subtracted below).
PUBLISHED_MILLIONS = {
    "vit_tiny_patch16": (5.7, True),  # DeiT-Ti (Touvron et al. 2021)
    "vit_small_patch16": (22.0, True),  # DeiT-S
    "vit_base_patch16": (86.0, True),  # ViT-B/16 (Dosovitskiy et al. 2021, Table 1)
    "swin_tiny": (28.0, True),  # Swin-T (Liu et al. 2021, Table 1)
    "swin_small": (50.0, True),  # Swin-S
    "swin_base": (88.0, True),  # Swin-B
    "tnt_small": (23.8, True),  # TNT-S (Han et al. 2021, Table 1)
    # CSWin (Dong et al. 2022): the official release's models, counted (its README and the
    # paper round them to 23M, 35M and 78M; 23M is 3 % above the released CSWin-T)
    "cswin_tiny": (22.3, True),
    "cswin_small": (34.6, True),
    "cswin_base": (77.4, True),
    "resnet18": (11.7, True),  # torchvision model card
    "resnet50": (25.6, True),  # torchvision model card; 23.5M without fc
    "resnet101": (44.5, True),  # torchvision model card
    # timm model cards (ResNet-D); R50-D/R101-D here freeze their norms, which then hold no
    # parameters (0.1-0.2 %), and R18-D/R34-D add RT-DETR's first-block projection (+0.04 %)
    "resnet18d": (11.7, True),
    "resnet34d": (21.8, True),
    "resnet50d": (25.6, True),
    "resnet101d": (44.6, True),
    "r50_vit_b16": (98.0, False),  # R50+ViT-B/16 encoder, as counted for TransUNet
    "r50_vit_b16_timm": (98.0, False),  # the same network in timm's layers
    "vit_b16_transunet": (86.0, True),  # ViT-B/16, TransUNet's plain-ViT encoder
}


def test_every_required_backbone_is_registered() -> None:
    assert list_backbones() == EXPECTED_NAMES == ALL_BACKBONES


def test_pattern_filters_names() -> None:
    assert list_backbones("swin_*") == ["swin_base", "swin_small", "swin_tiny"]
    assert list_backbones("nothing*") == []


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="did you mean swin_tiny"):
        create_backbone("swin_tiy")
    with pytest.raises(UnknownNameError, match="vit_base_patch16"):
        create_backbone("vit_base_patch_16")


def test_registering_a_name_twice_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        BACKBONES.register("resnet50")(lambda: None)


def test_every_backbone_but_our_own_small_cnn_has_a_published_size() -> None:
    assert sorted(PUBLISHED_MILLIONS) == [n for n in EXPECTED_NAMES if n != "tiny_cnn"]


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_parameter_count_matches_the_published_model(name: str) -> None:
    with torch.device("meta"):
        backbone = create_backbone(name)
    counted = sum(p.numel() for p in backbone.parameters()) / 1e6
    published, with_classifier = PUBLISHED_MILLIONS[name]
    if with_classifier:
        published -= (backbone.channels[-1] * 1000 + 1000) / 1e6
    assert counted == pytest.approx(published, rel=0.03)


def test_building_every_backbone_needs_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Every factory runs with sockets disabled; loading a local file too.

    The large networks are built on the meta device: construction runs the same timm and
    torchvision code (where a download would start), minus the seconds of weight initialisation.
    """
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.com", 80))  # the guard is in place

    weights = tmp_path / "resnet18.pth"
    torch.save(create_backbone("resnet18").state_dict(), weights)
    assert isinstance(create_backbone("resnet18", pretrained=weights), torch.nn.Module)
    for name in EXPECTED_NAMES:
        with torch.device("meta" if name in LARGE_BACKBONES else "cpu"):
            backbone = create_backbone(name)
        assert sum(p.numel() for p in backbone.parameters()) > 0
