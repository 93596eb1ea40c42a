"""``densevit convert NAME IN OUT``: turn another codebase's checkpoint into ours."""
from __future__ import annotations

import argparse
from pathlib import Path

from densevit.convert import load_converters


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint from another codebase (official DETR, TransUNet) to densevit",
        description="Convert a checkpoint from another codebase into densevit's layout.",
    )
    parser.add_argument("name", help="converter: detr-official | transunet")
    parser.add_argument("src", type=Path, help="input checkpoint (a local file)")
    parser.add_argument("dst", type=Path, help="output checkpoint path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    converters = load_converters()
    print(converters.build(args.name, args.src, args.dst))
    return 0
