"""Label arrays as integers: one check for every reader and evaluator that takes labels."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from densevit.data.images import read_label_map
from densevit.errors import UserInputError


def integer_labels(values: Any, what: str) -> np.ndarray:
    """``values`` (numpy, or anything ``np.asarray`` takes) as integer labels.

    Booleans become 0/1; floating-point labels are accepted only where every value is a whole
    number (NIfTI label files are often stored as float) and become int64. ``what`` names the
    source in the error.
    """
    array = np.asarray(values)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise UserInputError(f"{what}: labels must be integers, got {array.dtype}")
    if not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise UserInputError(f"{what}: labels must be integers, got non-integer values")
    return array.astype(np.int64)


def binary_mapping(values: Iterable[int], num_classes: int, mode: str = "auto") -> bool:
    """Whether ground truth with these label ``values`` holds 0/255 binary masks to read as 0/1.

    ``mode``: ``auto`` (yes when there are two classes and the values are 0 and 255), ``yes``
    or ``no``.
    """
    if mode not in ("auto", "yes", "no"):
        raise UserInputError(f"--binary-masks: expected auto, yes or no, got {mode!r}")
    if mode != "auto":
        return mode == "yes"
    present = set(int(v) for v in values)
    return num_classes == 2 and 255 in present and present <= {0, 255}


def apply_fov(labels: np.ndarray, fov_path: Path | None, outside: int) -> np.ndarray:
    """``labels`` with every pixel where the field-of-view mask is 0 set to ``outside``."""
    if fov_path is None:
        return labels
    fov = read_label_map(fov_path)
    if fov.shape != labels.shape:
        raise UserInputError(f"{fov_path}: size {fov.shape[::-1]} differs from its label map's {labels.shape[::-1]}")
    return np.where(fov > 0, labels, outside)
