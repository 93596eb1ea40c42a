"""CSWin: official parameter counts and keys, and the official arithmetic (``reference_cswin``) in float64."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from backbone_helpers import image_batch
from reference_cswin import ReferenceCSWin

from densevit.backbones import create_backbone

# the official classifiers with their 1000-class head and final norm
OFFICIAL_PARAMETERS = {"cswin_tiny": 22_320_552, "cswin_small": 34_643_304, "cswin_base": 77_382_184}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """An official-style CSWin-T file, ``{"state_dict_ema": ...}``, of the oracle's random weights.

    Norms and biases are randomised too, so that a parameter loaded into the wrong place shows.
    """
    torch.manual_seed(0)
    reference = ReferenceCSWin("tiny").eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path_factory.mktemp("cswin") / "cswin_tiny_224.pth"
    torch.save({"state_dict_ema": reference.state_dict()}, path)
    return path, reference


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMETERS))
def test_parameter_counts_are_the_official_models(name: str) -> None:
    with torch.device("meta"):
        classifier = create_backbone(name, num_classes=1000)
        backbone = create_backbone(name)
    assert sum(p.numel() for p in classifier.parameters()) == OFFICIAL_PARAMETERS[name]
    head = classifier.head.weight.numel() + classifier.head.bias.numel()
    assert sum(p.numel() for p in backbone.parameters()) == OFFICIAL_PARAMETERS[name] - head


def test_keys_are_the_official_layout(official_file) -> None:
    _, reference = official_file
    with torch.device("meta"):
        ours = create_backbone("cswin_tiny", num_classes=1000)
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert all(ours.state_dict()[k].shape == v.shape for k, v in theirs.items())
    assert "stage3.20.attns.1.get_v.weight" in theirs and "stage4.0.attns.1.get_v.weight" not in theirs


@pytest.mark.parametrize("size", [(224, 224), (224, 320), (64, 96)])
def test_official_file_gives_the_official_outputs_in_float64(official_file, size, caplog) -> None:
    # 224x224: the official classifier's own arithmetic (no padding anywhere). 224x320 pads
    # stage 3's 14x20 grid to 21 columns for the vertical 7-wide stripes; 64x96 pads its 4x6
    # grid in both directions: the official segmentation backbone's padding, which the oracle follows.
    path, reference = official_file
    with caplog.at_level(logging.WARNING):
        ours = create_backbone("cswin_tiny", pretrained=path, num_classes=1000)
    assert not caplog.records  # nothing missing, nothing unexpected
    ours, reference = ours.double().eval(), copy.deepcopy(reference).double()
    images = image_batch(1, *size).double()
    with torch.no_grad():
        want, logits = reference(images)
        got = ours(images)
        torch.testing.assert_close(ours.classify(images), logits, rtol=0, atol=1e-10)
    assert [tuple(m.shape) for m in got] == [tuple(m.shape) for m in want]
    for mine, theirs in zip(got, want):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_official_classifier_file_loads_into_a_backbone_without_head(official_file, caplog) -> None:
    path, reference = official_file
    with caplog.at_level(logging.WARNING):
        backbone = create_backbone("cswin_tiny", pretrained=path)
    assert not caplog.records  # the head is dropped, not reported as unexpected
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())
    assert not any(k.startswith("head.") for k in backbone.state_dict())


def test_strides_channels_and_out_indices() -> None:
    with torch.device("meta"):
        full = create_backbone("cswin_base")
        chosen = create_backbone("cswin_tiny", out_indices=(1, 2, 3))
        maps = chosen(torch.empty(2, 3, 96, 160))
    assert full.channels == [96, 192, 384, 768] and full.strides == [4, 8, 16, 32]
    assert chosen.channels == [128, 256, 512] and chosen.strides == [8, 16, 32]
    assert [tuple(m.shape) for m in maps] == [(2, 128, 12, 20), (2, 256, 6, 10), (2, 512, 3, 5)]
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("cswin_tiny", out_indices=(3, 1))


def test_pooled_features_are_the_normed_last_stage_averaged() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("cswin_tiny").eval()
    images = image_batch(2, 64, 64)
    with torch.no_grad():
        last = backbone(images)[-1]
        pooled = backbone.pooled_features(images)
    torch.testing.assert_close(pooled, last.mean(dim=(2, 3)))
    assert pooled.shape == (2, 512) and backbone.classify(images).shape == (2, 512)  # no head: identity


def test_train_mode_drops_paths_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("cswin_tiny").train()
    images = image_batch(2, 64, 96).requires_grad_(True)
    maps = backbone(images)
    sum(m.square().mean() for m in maps).backward()
    assert [n for n, p in backbone.named_parameters() if p.grad is None] == []
    assert images.grad is not None and images.grad.abs().sum() > 0
    with torch.no_grad():  # stochastic depth (0.2 at the last block by default) makes train passes differ
        assert not torch.allclose(backbone(images)[-1], backbone(images)[-1])
