"""Checks shared by the segmentation readers: label values against the classes, and the
``data.bad_samples`` policy (stop at the first bad file, or drop bad files with one warning).

Every error is a :class:`~densevit.errors.UserInputError` of one line that starts with the file.
"""
from __future__ import annotations

import warnings
from typing import Callable, Literal, TypeVar

import numpy as np

from densevit.errors import (
    ConfigError,
    SuspiciousInputWarning,
    UserInputError,
    one_line,
)

BadSamplesPolicy = Literal["raise", "drop"]
T = TypeVar("T")
_SHOWN = 3  # offenders named in a "dropped" warning


def _listed(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit].tolist())
    return shown + (", ..." if len(values) > limit else "")


def check_label_values(labels: np.ndarray, what: object, num_classes: int | None,
                       ignore_index: int | None = None, unit: str = "voxel") -> None:
    """Every value of ``labels`` is a class (``0..num_classes-1``) or ``ignore_index``; else one
    error naming ``what``, the first few bad values, how many ``unit``s hold them and what is allowed.
    ``num_classes`` None checks nothing."""
    if num_classes is None or labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < num_classes:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    count = int(np.count_nonzero(bad))
    if not count:
        return
    allowed = f"the classes 0..{num_classes - 1} (model.num_classes: {num_classes})"
    if ignore_index is not None:
        allowed += f" or {ignore_index} (data.ignore_index)"
    raise UserInputError(f"{what}: label value(s) {_listed(np.unique(labels[bad]))} in {count} {unit}(s); "
                         f"expected {allowed}")


def check_finite(values: np.ndarray, what: object, unit: str = "voxel") -> None:
    """No NaN or infinite value in ``values`` (integer arrays pass at no cost); else one error
    naming ``what`` and how many values are not finite."""
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(values.dtype, np.complexfloating):
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    count = int(finite.size - np.count_nonzero(finite))
    raise UserInputError(f"{what}: {count} of {values.size} {unit}(s) are not finite (NaN or Inf)")


def whole_labels(values: np.ndarray, what: object, unit: str = "voxel") -> np.ndarray:
    """Labels as int64: booleans and integers as they are, floats only where every value is a
    finite whole number (label files are often stored as float); else one error naming ``what``."""
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64, copy=False)
    if not np.issubdtype(values.dtype, np.floating):
        raise UserInputError(f"{what}: labels must be integers, got {values.dtype} values")
    finite = np.isfinite(values)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        raise UserInputError(f"{what}: labels must be integers, got {count} non-finite (NaN or Inf) {unit}(s)")
    fractional = values != np.round(values)
    if fractional.any():
        raise UserInputError(f"{what}: labels must be integers, got non-integer values "
                             f"{_listed(np.unique(values[fractional]))} in {int(fractional.sum())} {unit}(s)")
    return values.astype(np.int64)


class BadSamples:
    """``data.bad_samples`` over the files of one dataset, as it is opened.

    ``keep(check)`` runs one sample's ``check``: under ``raise`` its ``UserInputError`` goes
    on as is; under ``drop`` it is noted and ``keep`` returns None (the caller leaves the sample
    out). ``report(total)`` then warns once (:class:`~densevit.errors.SuspiciousInputWarning`)
    with the count and the first few messages, or fails when nothing is left. Config errors
    always go on: they are not about one file.
    """

    def __init__(self, policy: BadSamplesPolicy, what: object, things: str = "samples") -> None:
        if policy not in ("raise", "drop"):
            raise ConfigError(f"data.bad_samples: expected raise or drop, got {policy!r}")
        self.policy = policy
        self.what = what
        self.things = things
        self.messages: list[str] = []

    def keep(self, check: Callable[[], T]) -> T | None:
        try:
            return check()
        except ConfigError:
            raise
        except UserInputError as err:
            if self.policy == "raise":
                raise
            self.messages.append(one_line(err))
            return None

    def report(self, total: int) -> None:
        if not self.messages:
            return
        count = len(self.messages)
        if count >= total:
            raise UserInputError(f"{self.what}: all {total} {self.things} are bad (data.bad_samples: drop), "
                                 f"first: {self.messages[0]}")
        shown = "; ".join(self.messages[:_SHOWN]) + ("; ..." if count > _SHOWN else "")
        warnings.warn(SuspiciousInputWarning(
            f"{self.what}: dropped {count} of {total} {self.things} (data.bad_samples: drop): {shown}"), stacklevel=3)
