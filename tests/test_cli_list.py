"""``densevit list backbones|models``: every backbone with its channels, strides and parameter
count, and every model name; the table read from densevit/catalogue.py is checked against the
registries here (building each backbone on the meta device)."""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from densevit.backbones import create_backbone, list_backbones
from densevit.cli import main
from densevit.cli.listing import catalogue_source
from densevit.models import MODELS, list_models


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


def test_the_catalogue_is_what_the_registries_build() -> None:
    """densevit/catalogue.py, which ``densevit list`` reads, is the registries' current text."""
    written = (Path(__file__).resolve().parents[1] / "densevit" / "catalogue.py").read_text()
    assert written == catalogue_source(), "densevit/catalogue.py is stale: run python tools/update_catalogue.py"


def test_list_models_prints_every_built_in_model(capsys) -> None:
    assert main(["list", "models"]) == 0
    printed = capsys.readouterr().out.split()
    built_in = [name for name in list_models() if MODELS.get(name).__module__.startswith("densevit.")]
    assert printed == built_in and "detr_r50" in printed and "transunet_r50_vitb16" in printed
    assert main(["list", "models", "rtdetr_*"]) == 0
    assert capsys.readouterr().out.split() == [n for n in built_in if n.startswith("rtdetr_")]


def test_list_models_adds_third_party_heads(tmp_path, monkeypatch, capsys) -> None:
    """Every module of the ``densevit.heads`` entry-point group is imported and its models listed,
    two modules of one package included."""
    package = tmp_path / "my_heads"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("first", "second"):
        (package / f"{module}.py").write_text(
            "from densevit.models import MODELS\n\n"
            f"@MODELS.register('my_{module}_model')\n"
            "def factory(num_classes):\n    raise AssertionError('listing builds nothing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    extra = [importlib.metadata.EntryPoint(name, f"my_heads.{name}", "densevit.heads") for name in ("first", "second")]

    def entry_points(**selection):
        found = list(real(**selection))
        return [*found, *extra] if selection.get("group") == "densevit.heads" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        assert main(["list", "models", "my_*"]) == 0
        assert capsys.readouterr().out.split() == ["my_first_model", "my_second_model"]
    finally:
        for module in ("first", "second"):
            MODELS._factories.pop(f"my_{module}_model", None)
            sys.modules.pop(f"my_heads.{module}", None)
        sys.modules.pop("my_heads", None)
