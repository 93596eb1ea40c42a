"""``densevit predict --checkpoint C INPUT... --out DIR``: run a trained model over files."""
from __future__ import annotations

import argparse
from pathlib import Path

from densevit.errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a trained checkpoint over images, folders or volumes",
        description="Rebuild the model that CHECKPOINT was trained as (its config is stored in it) "
        "and write its predictions for each INPUT to --out; the task decides the formats.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pth written by densevit train")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="detection: keep boxes scoring at least this (default 0.5)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="sliding-window overlap between tiles, in [0, 1) (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=1, help="images or tiles per forward pass")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.engine.build import build_from_checkpoint

    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise UserInputError(f"INPUT: not found: {', '.join(missing)}")
    if not 0.0 <= args.overlap < 1.0:
        raise UserInputError(f"--overlap: expected a value in [0, 1), got {args.overlap}")
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    task, model = build_from_checkpoint(args.checkpoint, device=args.device)
    task.predict(model, list(args.inputs), args.out, args)
    print(f"wrote predictions for {len(args.inputs)} input(s) to {args.out}")
    return 0
