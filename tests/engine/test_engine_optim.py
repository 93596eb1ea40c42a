"""Parameter groups and per-iteration schedules, checked against closed-form formulas."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from densevit.config import OptimConfig, ScheduleConfig
from densevit.engine.optim import build_optimizer, build_param_groups, build_scheduler
from densevit.errors import ConfigError

BASE_LR = 0.1


def lrs_over(schedule: ScheduleConfig, total: int, iters_per_epoch: int = 1, min_lr_ok: bool = True) -> list[float]:
    """The lr the optimiser applies at each of ``total`` steps."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = build_scheduler(optimizer, schedule, total, BASE_LR, iters_per_epoch)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def warmup(it: int, iters: int, factor: float) -> float:
    return factor + (1 - factor) * it / iters if it < iters else 1.0


@pytest.mark.parametrize("warmup_iters", [0, 5])
def test_cosine(warmup_iters):
    total, min_lr = 40, 0.01
    got = lrs_over(ScheduleConfig(name="cosine", warmup_iters=warmup_iters, warmup_factor=0.01, min_lr=min_lr), total)
    for it, lr in enumerate(got):
        expected = (min_lr + (BASE_LR - min_lr) * 0.5 * (1 + math.cos(math.pi * it / total))) * warmup(it, warmup_iters, 0.01)
        assert lr == pytest.approx(expected, rel=1e-12), it
    assert got[0] == pytest.approx(BASE_LR * (0.01 if warmup_iters else 1.0))


def test_poly():
    total, power = 30, 0.9
    got = lrs_over(ScheduleConfig(name="poly", power=power, warmup_iters=3, warmup_factor=0.1), total)
    for it, lr in enumerate(got):
        expected = BASE_LR * (1 - it / total) ** power * warmup(it, 3, 0.1)
        assert lr == pytest.approx(expected, rel=1e-12), it
    assert got[-1] == pytest.approx(BASE_LR * (1 / total) ** power)


def test_step_with_iteration_and_epoch_milestones():
    got = lrs_over(ScheduleConfig(name="step", milestones=[7], milestone_epochs=[3], gamma=0.5), 20, iters_per_epoch=4)
    expected = [BASE_LR * (1 if it < 7 else 0.5 if it < 12 else 0.25) for it in range(20)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_constant_with_warmup():
    got = lrs_over(ScheduleConfig(name="constant", warmup_iters=4, warmup_factor=0.2), 8)
    assert got == pytest.approx([BASE_LR * f for f in (0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1)], rel=1e-12)


def test_schedule_scales_every_group_by_the_same_factor():
    model = Tiny()
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=BASE_LR, backbone_lr_mult=0.1))
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="cosine", min_lr=0.02), 10, BASE_LR, 1)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    factor = (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 6 / 10)))  # floor 0.02/0.1 = 0.2 of each group
    for group in optimizer.param_groups:
        start = BASE_LR * (0.1 if group["name"].startswith("backbone") else 1.0)
        assert group["lr"] == pytest.approx(start * factor, rel=1e-12)


def test_bad_schedule_configs_name_the_field():
    with pytest.raises(ConfigError, match="schedule.milestones"):
        lrs_over(ScheduleConfig(name="cosine", milestones=[3]), 5)
    with pytest.raises(ConfigError, match="schedule.min_lr"):
        lrs_over(ScheduleConfig(name="poly", min_lr=1.0), 5)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.rel_table = nn.Parameter(torch.ones(3, 4))

    def no_weight_decay(self) -> set[str]:
        return {"rel_table"}


class Tiny(nn.Module):
    backbone_prefixes = ("backbone.",)

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone.pos_embed = nn.Parameter(torch.ones(1, 5, 4))
        self.block = Block()
        self.query_embed = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"backbone.pos_embed", "query_embed.weight"}


EXPECTED = {  # name: (backbone?, decayed?)
    "backbone.0.weight": (True, True),
    "backbone.0.bias": (True, False),
    "backbone.1.weight": (True, False),
    "backbone.1.bias": (True, False),
    "backbone.pos_embed": (True, False),
    "block.proj.weight": (False, True),
    "block.proj.bias": (False, False),
    "block.norm.weight": (False, False),
    "block.norm.bias": (False, False),
    "block.rel_table": (False, False),
    "query_embed.weight": (False, False),
    "head.weight": (False, True),
    "head.bias": (False, False),
}


def test_param_groups():
    model = Tiny()
    cfg = OptimConfig(lr=0.01, weight_decay=0.05, backbone_lr_mult=0.1)
    groups = build_param_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    placed = {}
    for group in groups:
        for param in group["params"]:
            placed[names[id(param)]] = (group["lr"], group["weight_decay"])
    expected = {n: (0.01 * 0.1 if bb else 0.01, 0.05 if decay else 0.0) for n, (bb, decay) in EXPECTED.items()}
    assert placed == expected  # frozen parameters are left out


def test_backbone_lr_mult_that_matches_nothing_is_an_error():
    class NoBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)

    with pytest.raises(ConfigError, match=r"optim.backbone_lr_mult: 0.1 matches no trainable parameter of NoBackbone"):
        build_param_groups(NoBackbone(), OptimConfig(backbone_lr_mult=0.1))
    frozen = Tiny()
    frozen.backbone.requires_grad_(False)
    with pytest.raises(ConfigError, match="backbone_prefixes: backbone."):
        build_param_groups(frozen, OptimConfig(backbone_lr_mult=0.1))
    assert build_param_groups(NoBackbone(), OptimConfig())  # the default multiplier needs no backbone


@pytest.mark.parametrize(("model_name", "kwargs", "prefix"), [
    ("transunet_vit_t16", {"head_channels": 16, "decoder_channels": [16, 8, 8, 8]}, "encoder."),
    ("detr_tiny", {}, "backbone."),
])
def test_every_head_declares_its_backbone(model_name, kwargs, prefix):
    from densevit.models import create_model

    model = create_model(model_name, num_classes=3, **kwargs)
    groups = build_param_groups(model, OptimConfig(lr=1.0, backbone_lr_mult=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    slow = {names[id(p)] for g in groups if g["lr"] == pytest.approx(0.1) for p in g["params"]}
    assert slow == {n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)} != set()


def test_param_groups_without_the_exemption_decay_everything():
    groups = build_param_groups(Tiny(), OptimConfig(weight_decay=0.05, no_weight_decay_on_norm_bias_pos=False))
    assert {g["weight_decay"] for g in groups} == {0.05}
    assert sum(len(g["params"]) for g in groups) == len(EXPECTED)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_decay_reaches_only_decayed_parameters(name):
    """With zero gradients, one step shrinks exactly the decayed parameters."""
    model = Tiny()
    for p in model.parameters():
        nn.init.constant_(p, 1.0)
    optimizer = build_optimizer(model, OptimConfig(name=name, lr=0.1, weight_decay=0.5, momentum=0.0))
    assert isinstance(optimizer, torch.optim.AdamW if name == "adamw" else torch.optim.SGD)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    params = dict(model.named_parameters())
    for param_name, (_, decayed) in EXPECTED.items():
        expected = 1.0 - 0.1 * 0.5 if decayed else 1.0  # both apply p -= lr * wd * p here
        assert torch.allclose(params[param_name], torch.full_like(params[param_name], expected)), param_name
