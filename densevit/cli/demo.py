"""``densevit demo [classify|detect|segment]``: generate data, train a small model on the CPU, evaluate, draw.

A plain ``densevit demo`` runs every demo, one after the other (classify takes about a minute).
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from densevit.errors import UserInputError
from densevit.io import writable_folder

_DEMOS = {
    "classify": "densevit.demos.classify",
    "detect": "densevit.demos.detect",
    "segment": "densevit.demos.segment",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate small models on generated data (minutes on a CPU)",
        description="Generate a small synthetic dataset, train a small model on it, evaluate it "
        "and draw its predictions. With no argument, runs every demo.",
    )
    parser.add_argument("which", nargs="?", choices=sorted(_DEMOS), help="run only this demo")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the demo's config (repeatable; with one demo named), "
                        "e.g. densevit demo detect --set model.name=rtdetr_tiny")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.overrides and not args.which:
        raise UserInputError("demo --set: name the demo it applies to (densevit demo detect --set ...)")
    names = [args.which] if args.which else sorted(_DEMOS)
    writable_folder(args.out, "--out folder")
    summary = {}
    for name in names:
        module = importlib.import_module(_DEMOS[name])
        start = time.perf_counter()
        metrics = module.run_demo(args.out / name, device=args.device, overrides=tuple(args.overrides))
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        summary[name] = metrics
        print(f"demo {name}: {json.dumps(metrics)}")
    return 0
