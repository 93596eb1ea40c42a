"""``densevit evaluate CONFIG --checkpoint PATH [--set k=v ...] [--out FILE] [--device D]``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on the config's validation set",
        description="Load the weights of CHECKPOINT into the model of CONFIG, run the task's "
        "evaluator over the validation set and print the metrics as JSON.",
    )
    parser.add_argument("config", type=Path, help="experiment YAML file")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pth written by densevit train")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: train.device)")
    parser.add_argument("--strict", action="store_true",
                        help="suspicious data (a class never in the ground truth, labels mostly ignored) is an error")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.config import load_config
    from densevit.distributed import launcher_rank
    from densevit.engine.evaluate import evaluate
    from densevit.io import dumps_json, writable_folder, write_text_atomic

    cfg = load_config(args.config, [*args.overrides, *(["strict=true"] if args.strict else [])])
    if args.out and launcher_rank() == 0:
        writable_folder(args.out.parent, "--out file's folder")
    metrics = evaluate(cfg, args.checkpoint, device=args.device)
    if launcher_rank() == 0:
        text = dumps_json(metrics, indent=2)
        if args.out:
            write_text_atomic(args.out, text + "\n")
        print(text)
    return 0
