"""An exponential moving average (EMA) of the model's weights, as RT-DETR's ``ModelEMA``.

After every optimiser update the trainer calls :meth:`ModelEMA.update`::

    updates += 1
    d = decay * (1 - exp(-updates / warmup))
    ema = d * ema + (1 - d) * model        # every floating-point entry of the state dict

Parameters and floating-point buffers (BatchNorm's running statistics) are averaged; other
buffers (``num_batches_tracked``) are copied. The ramp keeps ``d`` small early on, so the
average is not dominated by the random initial weights: ``d`` reaches 63% of ``decay`` after
``warmup`` updates and 95% after three times as many.

Under DDP every process keeps its own, identical copy: the gradients are all-reduced before
each update, so every process holds the same weights and computes the same average, and no
communication is needed.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """The averaged copy of a model.

    ``module``: a deep copy of the (unwrapped: not DDP, not compiled) model, in eval mode and
    without gradients, on the model's device; it holds the averaged weights. ``updates``: the
    number of averaging updates so far (the ramp's position; saved with checkpoints).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: int) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        """The weight ``d`` the previous average keeps at update number ``updates``."""
        return self.decay * (1.0 - math.exp(-updates / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average ``model``'s current weights (the same architecture, unwrapped) into :attr:`module`."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.is_floating_point():
                average.mul_(d).add_(value, alpha=1.0 - d)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights: a state dict of the model (what checkpoints store as ``model``)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], updates: int) -> None:
        """Put back averaged weights and the number of updates behind them (every key must fit)."""
        self.module.load_state_dict(state_dict)
        self.updates = updates
