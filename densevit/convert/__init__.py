"""Weight converters from other codebases' checkpoints into densevit's layout.

Each converter module registers ``fn(src: Path, dst: Path) -> str`` in ``CONVERTERS`` (the
string is a short report for the user); ``densevit convert NAME IN OUT`` calls it.
"""
from __future__ import annotations

import importlib

from densevit.registry import Registry

CONVERTERS = Registry("converter")

_CONVERTER_MODULES = ("densevit.convert.detr", "densevit.convert.rtdetr", "densevit.convert.transunet")


def load_converters() -> Registry:
    """Import every converter module so that ``CONVERTERS`` is complete."""
    for module in _CONVERTER_MODULES:
        importlib.import_module(module)
    return CONVERTERS
