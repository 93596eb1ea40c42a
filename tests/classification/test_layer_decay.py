"""``optim.layer_decay``: parameter groups whose learning rates follow BEiT's formula, built from
the layers the model numbers itself."""
from __future__ import annotations

import pytest
import torch

from densevit.config import OptimConfig
from densevit.engine.optim import build_param_groups
from densevit.errors import ConfigError
from densevit.models import create_model


def test_each_parameter_gets_lr_times_decay_to_its_depth():
    with torch.device("meta"):
        model = create_model("classifier_vit_tiny", num_classes=4)
    cfg = OptimConfig(lr=1e-3, layer_decay=0.75, backbone_lr_mult=0.5, weight_decay=0.05)
    groups = build_param_groups(model, cfg)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    top = model.num_layers - 1
    for name, param in model.named_parameters():
        backbone = name.startswith("backbone.")
        expected = 1e-3 * (0.5 if backbone else 1.0) * 0.75 ** (top - model.layer_id(name))
        assert lr_of[id(param)] == pytest.approx(expected, rel=1e-12), name
        no_decay = param.ndim <= 1 or name in {"backbone.body.cls_token", "backbone.body.pos_embed"}
        assert decay_of[id(param)] == (0.0 if no_decay else 0.05), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # the patch embedding learns slowest, the head at the full rate
    assert lr_of[id(model.backbone.body.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5 * 0.75 ** 13)
    assert lr_of[id(model.head.weight)] == pytest.approx(1e-3)


def test_off_by_default_and_refused_for_models_without_layers():
    model = create_model("classifier_tiny_cnn", num_classes=3)
    assert [g["name"] for g in build_param_groups(model, OptimConfig())] == ["backbone", "backbone_no_decay", "head",
                                                                              "head_no_decay"]
    with pytest.raises(ConfigError, match="optim.layer_decay: Classifier does not number its layers"):
        build_param_groups(model, OptimConfig(layer_decay=0.8))
    with pytest.raises(ConfigError, match=r"optim.layer_decay: expected a value in \(0, 1\]"):
        build_param_groups(model, OptimConfig(layer_decay=1.5))
