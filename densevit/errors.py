"""Errors that mean "the user's input is wrong", as opposed to a bug in densevit.

The CLI prints these as one line (no traceback) and exits with code 2.
"""
from __future__ import annotations

import warnings


class UserInputError(ValueError):
    """Bad input from a file, a config or the command line; the message names the culprit."""


class ConfigError(UserInputError):
    """A config file or ``--set`` override is invalid; the message gives the YAML path of the key."""


class SuspiciousInputWarning(UserWarning):
    """Input that is valid but probably not what the user meant: a class that never appears in
    the ground truth, labels that are mostly the ignore value."""


def suspicious(message: str, strict: bool = False) -> None:
    """Warn about suspicious input; with ``strict`` (``--strict``) it is a ``UserInputError``."""
    if strict:
        raise UserInputError(f"{message} (an error with --strict)")
    warnings.warn(SuspiciousInputWarning(message), stacklevel=2)


class InputNote(UserWarning):
    """Something densevit did with the input that the user should know about (masks read as 0/1)."""


def one_line(text: object) -> str:
    """``text`` with its runs of whitespace (newlines of library messages) as single spaces."""
    return " ".join(str(text).split())


def note(message: str) -> None:
    """Tell the user what was done with their input (the CLI prints it as one ``note:`` line)."""
    warnings.warn(InputNote(message), stacklevel=2)
