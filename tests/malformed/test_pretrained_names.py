"""Weights names that cannot be used: malformed, unknown to timm (both found when the config
is loaded, naming the config field), or not in the cache while offline. Each is one
``densevit train: error:`` line (exit code 2) naming the name, and nothing is trained; the CLI runs in-process, offline, and may not open a connection.
"""
from __future__ import annotations

import pytest
from malformed_helpers import error_line
from test_pretrained_by_name import hub_cache as offline_hub_cache
from test_pretrained_by_name import write_hub_file

from densevit.demos import demo_config_path
from densevit.demos.classify import generate_shape_folders

# (--set item, words the error line must hold besides the name)
CASES = {
    "empty timm name": ("model.pretrained='timm:'", ["expected timm:<model>", "model.pretrained:"]),
    "empty timm name, unquoted (YAML reads a mapping)": ("model.pretrained=timm:", ["model.pretrained"]),
    "timm name with a repo path": ("model.pretrained=timm:timm/resnet18.tv_in1k", ["expected timm:<model>", "model.pretrained:"]),
    "hf-hub name without a slash": ("model.pretrained=hf-hub:noslash", ["expected hf-hub:<org>/<repo>", "model.pretrained:"]),
    "hf-hub name without a repo": ("model.pretrained=hf-hub:someone/", ["expected hf-hub:<org>/<repo>", "model.pretrained:"]),
    "hf-hub repo with a space": ("model.pretrained=hf-hub:some one/repo", ["expected hf-hub:<org>/<repo>", "model.pretrained:"]),
    "unknown timm tag": ("model.pretrained=timm:resnet18.tv_in1kk", ["did you mean timm:resnet18.tv_in1k", "model.pretrained:"]),
    "unknown timm model, backbone kwargs": ("model.kwargs.backbone_pretrained=timm:vit_base_patch16_224.augreg_in21",
                                            ["did you mean timm:vit_base_patch16_224.augreg_in21k",
                                             "model.kwargs.backbone_pretrained:"]),
    "timm name not cached, offline": ("model.pretrained=timm:resnet18.tv_in1k",
                                      ["timm/resnet18.tv_in1k", "model.safetensors", "HF_HUB_OFFLINE=1",
                                       "give its path instead"]),
    "hf-hub file not cached, offline": ("model.pretrained=hf-hub:someone/tiny/ema.pth",
                                        ["someone/tiny", "ema.pth", "HF_HUB_OFFLINE=1"]),
}


hub_cache = offline_hub_cache  # the fixture: an empty hub cache, offline, no connection allowed


@pytest.fixture
def shapes(tmp_path):
    root = tmp_path / "shapes"
    generate_shape_folders(root, {"train": 3, "val": 3})
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_unusable_weights_name_is_one_line(cli, hub_cache, shapes, tmp_path, case):
    item, words = CASES[case]
    name = item.partition("=")[2].strip("'")
    # a cached repo without the file asked for changes nothing offline: the hub alone could tell
    write_hub_file(hub_cache, "someone/tiny", "model.safetensors", {})
    rc, err = cli("train", str(demo_config_path("classify")), "--set", f"data.root={shapes}", "--set", item,
                  "--set", "train.iters=1")
    line = error_line(rc, err, name, *words)
    assert "\n" not in line
    assert not list(tmp_path.rglob("*.pth")), "nothing may be trained"
