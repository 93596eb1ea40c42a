"""``densevit demo``: generated data -> a small model trained on the CPU -> scores -> pictures.

One module per demo (``classify``, ``detect``, ``segment``), each with ``run_demo(out_dir, device) -> dict``
and its config shipped beside it (``classify.yaml``, ``detect.yaml``, ``segment.yaml``).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_config_path(name: str) -> Path:
    """The shipped config of demo ``name`` (``detect`` or ``segment``)."""
    return Path(str(resources.files("densevit.demos") / f"{name}.yaml"))
