"""``densevit list backbones|models [PATTERN]``: what can be built by name.

``list backbones`` prints a table of every backbone with the channels and strides of its
feature maps and its parameter count; ``list models`` prints the model names.

Neither imports PyTorch: both read :mod:`densevit.catalogue`, a table of the built-in
backbones and models written from the registries by ``python tools/update_catalogue.py``
(the backbones built on PyTorch's ``meta`` device: shapes only) and kept equal to them by
``tests/test_cli_list.py``. Models that a third-party package registers through the
``densevit.heads`` entry points are added by importing that package (its own import cost).
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import pprint
from typing import Any

_KINDS = ("backbones", "models")
# The packages of this distribution that register models: their names are in the catalogue.
_OWN_PACKAGE = "densevit"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the backbones or models that can be built by name",
        description="List registered backbones (with channels, strides and parameters) or models.",
    )
    parser.add_argument("kind", choices=_KINDS, help="what to list")
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'vit_*'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit import catalogue

    if args.kind == "backbones":
        print(backbone_table({name: catalogue.BACKBONES[name]
                              for name in _matching(catalogue.BACKBONES, args.pattern)}))
    else:
        for name in _matching([*catalogue.MODELS, *plugin_model_names()], args.pattern):
            print(name)
    return 0


def _matching(names: Any, pattern: str | None) -> list[str]:
    return sorted(n for n in set(names) if pattern is None or fnmatch.fnmatch(n, pattern))


def plugin_model_names() -> list[str]:
    """The model names registered by installed third-party head packages (imported here)."""
    from importlib.metadata import entry_points

    from densevit.models import MODELS
    from densevit.registry import HEAD_PLUGINS

    modules = [entry.value for entry in entry_points(group=HEAD_PLUGINS) if entry.value.split(".")[0] != _OWN_PACKAGE]
    for module in modules:
        importlib.import_module(module)
    packages = {module.split(".")[0] for module in modules}
    return [name for name in MODELS.names(load_plugins=False) if _package_of(name) in packages]


def backbone_table(rows_by_name: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]]) -> str:
    """A text table: name, channels, strides and parameters (millions) of each backbone.

    ``rows_by_name`` maps a name to ``(channels, strides, parameter count)`` as in the catalogue.
    """
    rows = [("name", "channels", "strides", "params (M)")]
    for name, (channels, strides, params) in rows_by_name.items():
        rows.append((name, _joined(channels), _joined(strides), f"{params / 1e6:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]  # numbers right-aligned
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]))
    return "\n".join(lines)


def _joined(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def built_catalogue() -> tuple[dict[str, tuple[tuple[int, ...], tuple[int, ...], int]], list[str]]:
    """The backbones (built on the ``meta`` device) and built-in models, from the registries.

    Imports PyTorch and every head; used to write and to check :mod:`densevit.catalogue`.
    """
    import torch

    from densevit.backbones import create_backbone, list_backbones
    from densevit.models import list_models

    backbones = {}
    for name in list_backbones():
        with torch.device("meta"):
            backbone = create_backbone(name)
        backbones[name] = (tuple(backbone.channels), tuple(backbone.strides),
                           sum(p.numel() for p in backbone.parameters()))
    models = [name for name in list_models() if _package_of(name) == _OWN_PACKAGE]
    return backbones, models


def _package_of(model: str) -> str:
    """The top-level package whose module registered ``model``."""
    from densevit.models import MODELS

    return MODELS.get(model).__module__.split(".")[0]


def catalogue_source() -> str:
    """The text of ``densevit/catalogue.py`` for the registries as they are now."""
    backbones, models = built_catalogue()
    return (
        '"""The built-in backbones and models, for ``densevit list`` (which then needs no PyTorch).\n\n'
        "Written by ``python tools/update_catalogue.py`` from the registries; do not edit by hand.\n"
        "``BACKBONES``: name -> (channels, strides, parameter count) of its feature maps;\n"
        '``MODELS``: the names ``create_model`` builds. tests/test_cli_list.py checks both.\n"""\n\n'
        f"BACKBONES = {pprint.pformat(backbones, width=110, sort_dicts=True)}\n\n"
        f"MODELS = {pprint.pformat(tuple(models), width=110)}\n"
    )
