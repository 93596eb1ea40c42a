"""Benchmarks, one module per section (``eval``, ``train``, ``detect``, ``converge``).

A section module exposes ``add_arguments(parser)`` and ``run(args) -> dict``; the dict
holds, for each measurement, our figure, the baseline measured in the same run, and their
ratio. ``tools/benchmark.py SECTION`` prints it and writes it as JSON.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import torch

SECTIONS = ("eval", "train", "detect", "converge")


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall-clock seconds of ``repeat`` calls of ``fn``, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def environment() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
