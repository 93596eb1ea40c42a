"""Label arrays as integers: one check for every reader and evaluator that takes labels."""
from __future__ import annotations

from typing import Any

import numpy as np

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
