"""``densevit list backbones``: every backbone with its channels, strides and parameter count."""
from __future__ import annotations

import contextlib
import io

import pytest
import timm
import torch
import torchvision

from densevit.backbones import create_backbone, list_backbones
from densevit.cli import main


def table_rows(text: str) -> dict[str, list[str]]:
    lines = text.strip().splitlines()
    assert lines[0].split() == ["name", "channels", "strides", "params", "(M)"]
    return {cells[0]: cells[1:] for cells in (line.split() for line in lines[1:])}


@pytest.fixture(scope="module")
def full_table() -> dict[str, list[str]]:
    """The rows of ``densevit list backbones``, run once for this module."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", "backbones"]) == 0
    return table_rows(out.getvalue())


def test_list_backbones_shows_every_backbone(full_table) -> None:
    rows = full_table
    assert sorted(rows) == list_backbones()
    for name, (channels, strides, _) in rows.items():
        with torch.device("meta"):
            backbone = create_backbone(name)
        assert channels == ",".join(map(str, backbone.channels))
        assert strides == ",".join(map(str, backbone.strides))
    assert rows["swin_tiny"][:2] == ["96,192,384,768", "4,8,16,32"]
    assert rows["cswin_tiny"][:2] == ["64,128,256,512", "4,8,16,32"]
    assert rows["r50_vit_b16"][:2] == rows["r50_vit_b16_timm"][:2] == ["64,256,512,768", "2,4,8,16"]
    assert rows["vit_b16_transunet"][:2] == ["768", "16"]


def test_parameter_column_counts_the_networks(full_table) -> None:
    rows = full_table
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        resnet = torchvision.models.resnet50(weights=None)
    # FrozenBatchNorm2d holds its affine terms as buffers, so the ResNet count leaves out BN and fc
    resnet_trunk = sum(
        p.numel()
        for n, p in resnet.named_parameters()
        if not n.startswith("fc.") and ".bn" not in f".{n}" and "downsample.1" not in n
    )
    assert rows["vit_base_patch16"][2] == f"{sum(p.numel() for p in vit.parameters()) / 1e6:.2f}" == "85.80"
    assert rows["resnet50"][2] == f"{resnet_trunk / 1e6:.2f}"


def test_pattern_filters_the_table(capsys) -> None:
    assert main(["list", "backbones", "resnet*d"]) == 0
    assert sorted(table_rows(capsys.readouterr().out)) == ["resnet101d", "resnet18d", "resnet34d", "resnet50d"]


def test_unknown_kind_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "datasets"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
