"""Errors that mean "the user's input is wrong", as opposed to a bug in densevit.

The CLI prints these as one line (no traceback) and exits with code 2.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from a file, a config or the command line; the message names the culprit."""


class ConfigError(UserInputError):
    """A config file or ``--set`` override is invalid; the message gives the YAML path of the key."""
