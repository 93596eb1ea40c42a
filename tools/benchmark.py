#!/usr/bin/env python
"""Run one benchmark section: ``python tools/benchmark.py eval|train|detect [--out FILE] ...``.

Each section prints its figures, the baseline measured in the same run and their ratio,
and writes them as JSON (default ``bench_out/<section>.json``, or the name the section's
``default_out(args)`` gives: ``eval --end-to-end`` writes ``bench_out/eval_end_to_end.json``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from densevit.bench import SECTIONS, environment
from densevit.io import dumps_json, write_json_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="section", required=True)
    for name in SECTIONS:
        module = importlib.import_module(f"densevit.bench.{name}")
        section = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        section.add_argument("--out", type=Path, default=None, help=f"JSON file (default bench_out/{name}.json)")
        module.add_arguments(section)
        section.set_defaults(module=module)
    args = parser.parse_args(argv)
    if args.out is None:
        default_out = getattr(args.module, "default_out", lambda _: args.section)
        args.out = Path("bench_out") / f"{default_out(args)}.json"
    figures = args.module.run(args)
    # After the run: a section may set its own thread count, and the record should say so.
    results = {"section": args.section, **figures, "environment": environment()}
    write_json_atomic(results, args.out)
    print(dumps_json(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
