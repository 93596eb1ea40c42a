"""``densevit list backbones|models [PATTERN]``: what can be built by name.

``list backbones`` prints a table of every backbone with the channels and strides of its
feature maps and its parameter count; the backbones are built on PyTorch's ``meta`` device
(shapes only, no memory, no initialisation), so the table appears in about a second.

Both import PyTorch (in :func:`run`): the backbones are built, and the model names are
registered by the head packages when they are imported (:mod:`densevit.registry`).
"""
from __future__ import annotations

import argparse

_KINDS = ("backbones", "models")


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
    from densevit.backbones import list_backbones
    from densevit.models import list_models

    if args.kind == "backbones":
        print(backbone_table(list_backbones(args.pattern)))
    else:
        for name in list_models(args.pattern):
            print(name)
    return 0


def backbone_table(names: list[str]) -> str:
    """A text table: name, channels, strides and parameters (millions) of each backbone."""
    import torch

    from densevit.backbones import create_backbone

    rows = [("name", "channels", "strides", "params (M)")]
    for name in names:
        with torch.device("meta"):
            backbone = create_backbone(name)
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        rows.append((name, _joined(backbone.channels), _joined(backbone.strides), f"{params:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]  # numbers right-aligned
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]))
    return "\n".join(lines)


def _joined(values: list[int]) -> str:
    return ",".join(str(v) for v in values)
