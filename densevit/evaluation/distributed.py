"""Collectives for evaluators that also work in a single process with no process group.

Evaluators accumulate per process and combine at ``compute()``: objects (detections, per-case
rows) are gathered, tensors (confusion matrices) are summed. Without an initialised
``torch.distributed`` process group both are the identity, so the same evaluator code runs in
a plain script, a test and under ``torchrun``. When a group is initialised, every process must
call ``compute()`` (the collectives block until all have).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A new tensor holding the element-wise sum of ``tensor`` over all processes.

    ``tensor`` itself is left untouched, so ``compute()`` can be called more than once.
    """
    total = tensor.clone()
    if is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
