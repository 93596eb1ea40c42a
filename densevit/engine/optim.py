"""Optimiser with parameter groups, and the per-iteration learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from densevit.config import OptimConfig, ScheduleConfig
from densevit.errors import ConfigError


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that modules list in their own ``no_weight_decay()`` (timm convention)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            names.update(f"{prefix}.{n}" if prefix else n for n in hook())
    return names


def build_param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split trainable parameters by (backbone or not) x (decayed or not), as the model declares them.

    The model names its backbone with ``backbone_prefixes`` (key prefixes, e.g. ``("backbone.",)``);
    those parameters get ``lr * backbone_lr_mult``. With ``no_weight_decay_on_norm_bias_pos``,
    1-D parameters (biases, norm scales) and the names any module lists in its
    ``no_weight_decay()`` (position embeddings, tokens, query embeddings) get weight decay 0.
    A ``backbone_lr_mult`` other than 1 that matches no trainable parameter is an error. Empty
    groups are left out; each group carries a ``name`` for the logs.

    With ``layer_decay`` below 1 (BEiT / MAE fine-tuning) the groups are split by layer too: the
    model numbers its layers (``num_layers``, ``layer_id(name)`` in ``0 .. num_layers - 1``, the
    head last) and layer ``i`` gets ``lr * layer_decay ** (num_layers - 1 - i)``.
    """
    layer_of = _layer_ids(model, cfg)
    exempt = no_weight_decay_names(model) if cfg.no_weight_decay_on_norm_bias_pos else set()
    backbone_prefixes = tuple(getattr(model, "backbone_prefixes", ()))
    groups: dict[tuple[bool, bool, int], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = bool(backbone_prefixes) and name.startswith(backbone_prefixes)
        decay = not (cfg.no_weight_decay_on_norm_bias_pos and (param.ndim <= 1 or name in exempt))
        groups.setdefault((backbone, decay, layer_of(name) if layer_of else 0), []).append(param)
    if cfg.backbone_lr_mult != 1.0 and not any(backbone for backbone, _, _ in groups):
        declared = ", ".join(backbone_prefixes) or "none"
        raise ConfigError(
            f"optim.backbone_lr_mult: {cfg.backbone_lr_mult} matches no trainable parameter of "
            f"{type(model).__name__} (its backbone_prefixes: {declared}); remove it or train the backbone"
        )
    out = []
    top = getattr(model, "num_layers", 1) - 1
    for (backbone, decay, layer), params in sorted(groups.items(), key=lambda item: (not item[0][0], not item[0][1], item[0][2])):
        out.append(
            {
                "name": f"{'backbone' if backbone else 'head'}{'' if decay else '_no_decay'}"
                + (f"_layer{layer}" if layer_of else ""),
                "params": params,
                "lr": cfg.lr * (cfg.backbone_lr_mult if backbone else 1.0)
                * (cfg.layer_decay ** (top - layer) if layer_of else 1.0),
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        )
    return out


def _layer_ids(model: nn.Module, cfg: OptimConfig) -> Callable[[str], int] | None:
    """The model's ``layer_id`` when ``optim.layer_decay`` asks for it (None when it is 1)."""
    if cfg.layer_decay == 1.0:
        return None
    if not 0.0 < cfg.layer_decay < 1.0:
        raise ConfigError(f"optim.layer_decay: expected a value in (0, 1] (1 turns it off), got {cfg.layer_decay}")
    layer_id = getattr(model, "layer_id", None)
    if not callable(layer_id) or getattr(model, "num_layers", 0) < 1:
        raise ConfigError(f"optim.layer_decay: {type(model).__name__} does not number its layers "
                          "(num_layers, layer_id); remove it or use a transformer backbone")
    return layer_id


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`build_param_groups`."""
    groups = build_param_groups(model, cfg)
    if not groups:
        raise ConfigError("optim: the model has no trainable parameters")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name: expected 'adamw' or 'sgd', got {cfg.name!r}")


class LRFactor:
    """The learning-rate multiplier at iteration ``it`` (0-based, counted in optimiser steps).

    ``warmup(it) * main(it)``, where ``warmup`` rises linearly from ``warmup_factor`` to 1 over
    ``warmup_iters`` and ``main`` is, with ``T = total_iters`` and floor ``f = min_lr / lr``:

    * constant: 1
    * step: ``gamma ** (number of milestones <= it)``
    * poly: ``f + (1 - f) * (1 - it / T) ** power``
    * cosine: ``f + (1 - f) * (1 + cos(pi * it / T)) / 2``

    Only plain numbers live on the instance, so a scheduler's state dict stays loadable with
    ``weights_only=True``.
    """

    def __init__(self, cfg: ScheduleConfig, total_iters: int, base_lr: float, iters_per_epoch: int) -> None:
        if cfg.name != "step" and (cfg.milestones or cfg.milestone_epochs):
            raise ConfigError(f"schedule.milestones: only used by schedule.name 'step', not {cfg.name!r}")
        if cfg.name in ("poly", "cosine") and cfg.min_lr > base_lr:
            raise ConfigError(f"schedule.min_lr: {cfg.min_lr} is above optim.lr {base_lr}")
        if cfg.warmup_iters < 0 or not 0.0 <= cfg.warmup_factor <= 1.0:
            raise ConfigError("schedule.warmup_iters must be >= 0 and schedule.warmup_factor in [0, 1]")
        self.name = cfg.name
        self.total_iters = max(int(total_iters), 1)
        self.warmup_iters = int(cfg.warmup_iters)
        self.warmup_factor = float(cfg.warmup_factor)
        self.milestones = sorted([int(m) for m in cfg.milestones] + [int(e) * iters_per_epoch for e in cfg.milestone_epochs])
        self.gamma = float(cfg.gamma)
        self.power = float(cfg.power)
        self.floor = float(cfg.min_lr) / base_lr if base_lr > 0 else 0.0

    def __call__(self, it: int) -> float:
        return self.warmup(it) * self.main(it)

    def warmup(self, it: int) -> float:
        if it >= self.warmup_iters:
            return 1.0
        alpha = it / self.warmup_iters
        return self.warmup_factor * (1.0 - alpha) + alpha

    def main(self, it: int) -> float:
        progress = min(it, self.total_iters) / self.total_iters
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** sum(1 for m in self.milestones if m <= it)
        if self.name == "poly":
            return self.floor + (1.0 - self.floor) * (1.0 - progress) ** self.power
        if self.name == "cosine":
            return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ConfigError(f"schedule.name: expected constant, step, poly or cosine, got {self.name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_iters: int, base_lr: float, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per optimiser step: group lr = group base lr x :class:`LRFactor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg, total_iters, base_lr, iters_per_epoch))
