"""Small range checks for config values, with uniform wording.

Each function raises :class:`~densevit.errors.ConfigError` with the message
``"<key>: expected <what>, got <value>"`` when ``value`` is out of range, and returns
nothing otherwise. ``key`` is the YAML path of the value (``data.hflip``); the config
loader (:func:`densevit.config.build_config`) prefixes the file name, so the ``check()``
methods of config sections call these without it::

    def check(self) -> None:
        probability(self.hflip, "data.hflip")
        positive_size(self.img_size, "data.img_size")
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

from densevit.errors import ConfigError

__all__ = ["positive", "non_negative", "probability", "fraction", "at_least", "increasing", "positive_size",
           "did_you_mean"]


def _fail(key: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {what}, got {value!r}")


def _number(value: Any) -> bool:
    """A real number (not a bool) that is not NaN."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def positive(value: float, key: str) -> None:
    """``value > 0``."""
    if not (_number(value) and value > 0):
        raise _fail(key, "a positive number", value)


def non_negative(value: float, key: str) -> None:
    """``value >= 0``."""
    if not (_number(value) and value >= 0):
        raise _fail(key, "0 or more", value)


def probability(value: float, key: str) -> None:
    """``0 <= value <= 1``."""
    if not (_number(value) and 0 <= value <= 1):
        raise _fail(key, "a probability in [0, 1]", value)


def fraction(value: float, key: str) -> None:
    """``0 < value <= 1``."""
    if not (_number(value) and 0 < value <= 1):
        raise _fail(key, "a value in (0, 1]", value)


def at_least(value: float, key: str, low: float) -> None:
    """``value >= low``."""
    if not (_number(value) and value >= low):
        raise _fail(key, f"{low} or more", value)


def increasing(values: Iterable[float], key: str) -> None:
    """Each value greater than the one before (an empty list passes)."""
    values = list(values)
    for i, value in enumerate(values):
        if not _number(value):
            raise _fail(f"{key}[{i}]", "a number", value)
        if i and value <= values[i - 1]:
            raise _fail(key, "strictly increasing values", values)


def positive_size(values: int | Iterable[int], key: str) -> None:
    """One int, or each int of a list/tuple, ``>= 1`` (image sizes, crop sizes)."""
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    if not items:
        raise _fail(key, "at least one size", values)
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            what = "positive integers" if isinstance(values, (list, tuple)) else "a positive integer"
            raise _fail(key, what, values)


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` naming the choices closest to ``value``, or ``""`` when none is close."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
