"""Benchmarks, one module per section (``eval``, ``train``, ``detect``, ``converge``).

A section module exposes ``add_arguments(parser)`` and ``run(args) -> dict``; the dict
holds, for each measurement, our figure, the baseline measured in the same run, and their
ratio. ``tools/benchmark.py SECTION`` prints it and writes it as JSON.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

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


# Runs ``argv[2:]`` and writes its wall-clock seconds and peak resident memory (KB) to ``argv[1]``.
# A process's peak memory counts the memory of the process that forked it (Linux keeps the
# high-water mark across fork and exec), so the measured command is forked from this small
# interpreter rather than from the benchmark (hundreds of MB with PyTorch loaded).
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(command: Sequence[str | Path], log: Path) -> dict[str, float]:
    """Wall-clock seconds and peak resident memory (MB, ``ru_maxrss``) of one process, which must
    succeed; its output goes to ``log``. The time is taken around the process alone (fork to
    exit), without the small launcher that measures it."""
    with tempfile.TemporaryDirectory() as folder, log.open("wb") as sink:
        figures = Path(folder) / "figures"
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, figures, *command],
                              stdout=sink, stderr=subprocess.STDOUT)
        text = figures.read_text() if figures.is_file() else ""
    if done.returncode or not text:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}): {log.read_text()[-2000:]}")
    seconds, peak_kb = text.split()
    return {"seconds": float(seconds), "peak_rss_mb": int(peak_kb) / 1024}


def environment() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
