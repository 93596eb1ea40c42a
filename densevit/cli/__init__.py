"""The ``densevit`` command line.

Each subcommand lives in its own module in this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered
automatically, so adding a command never means editing this file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from typing import Sequence

from densevit import __version__
from densevit.errors import InputNote, SuspiciousInputWarning, UserInputError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="densevit",
        description="Dense prediction with vision transformers: DETR detection, TransUNet "
        "segmentation, and evaluators that match the reference tools.",
    )
    parser.add_argument("--version", action="version", version=f"densevit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def _show_densevit_warnings_as_lines(command: str) -> None:
    """Notes and warnings about the user's input as one line each (``densevit score: note: ...``)."""
    original = warnings.showwarning
    warnings.simplefilter("always", InputNote)
    warnings.simplefilter("always", SuspiciousInputWarning)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, (InputNote, SuspiciousInputWarning)):
            kind = "note" if issubclass(category, InputNote) else "warning"
            print(f"densevit {command}: {kind}: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _print_error(command: str, err: UserInputError) -> None:
    """One line on stderr. Under torchrun an error every process raised together
    (:func:`densevit.distributed.input_errors_shared`) is printed by the first process only;
    one only this process met says which process it is."""
    rank = int(os.environ.get("RANK", "0"))
    if rank and getattr(err, "shared_by_all", False):
        return
    where = f" (process {rank})" if rank else ""
    print(f"densevit {command}: error{where}: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``densevit`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            _show_densevit_warnings_as_lines(args.command)
            return int(args.func(args) or 0)
    except UserInputError as err:
        _print_error(args.command, err)
        return 2
    except BrokenPipeError:
        # The reader went away (``densevit list backbones | head``): not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"densevit {args.command}: interrupted", file=sys.stderr)
        return 130
