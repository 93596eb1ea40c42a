"""``densevit train CONFIG [--set k=v ...] [--resume PATH|auto] [--out DIR] [--device D]``.

Runs under ``torchrun --nproc-per-node N -m densevit train ...`` unchanged (DDP); only the
first process prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config file (one process, or many under torchrun)",
        description="Train the experiment CONFIG. The run directory receives the resolved config "
        "(config.yaml), metrics.jsonl, TensorBoard scalars, curves.png, checkpoints (last.pth, "
        "best.pth) and the final validation metrics (metrics.json). Ctrl-C or SIGTERM writes a "
        "resumable checkpoint before exiting.",
    )
    parser.add_argument("config", type=Path, help="experiment YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue from a checkpoint; 'auto' takes the newest in the run directory")
    parser.add_argument("--out", type=Path,
                        help="run directory (default: runs/<config name>)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: train.device)")
    parser.add_argument("--strict", action="store_true",
                        help="suspicious data (a class never in the ground truth, labels mostly ignored) is an error")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.config import load_config
    from densevit.distributed import launcher_rank
    from densevit.engine.signals import TrainingInterrupted
    from densevit.engine.trainer import NonFiniteLossError, train
    from densevit.io import dumps_json

    cfg = load_config(args.config, [*args.overrides, *(["strict=true"] if args.strict else [])])
    out_dir = args.out or Path("runs") / (cfg.name or args.config.stem)
    main_process = launcher_rank() == 0
    try:
        metrics = train(cfg, out_dir, resume=args.resume, device=args.device)
    except NonFiniteLossError as err:
        if main_process:
            print(f"densevit train: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        if main_process:
            print(f"densevit train: {err}", file=sys.stderr)
        return 130
    if main_process:
        print(dumps_json({"run_dir": str(out_dir), "metrics": metrics}))
    return 0
