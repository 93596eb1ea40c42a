"""Reading pictures and label maps from disk: one reader each, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from densevit.errors import UserInputError

# PIL modes that hold one value per pixel (a label map), as opposed to colour pictures.
LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")


def read_rgb(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read any PIL image (grayscale, palette, RGBA, 16-bit) as HWC uint8 RGB.

    The EXIF orientation is applied, unless ``expected_hw`` (the size the annotations were
    made on) matches the stored pixels and not the rotated ones.
    """
    try:
        with Image.open(path) as raw:
            raw.load()
            image = ImageOps.exif_transpose(raw)
            if expected_hw is not None and (image.height, image.width) != expected_hw:
                stored_hw = (raw.height, raw.width)
                image = raw if stored_hw == expected_hw else None
            if image is not None:
                return np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"{path}: cannot read image: {err}") from None
    raise UserInputError(f"{path}: image is {stored_hw[1]}x{stored_hw[0]} but its annotations say "
                         f"{expected_hw[1]}x{expected_hw[0]} (width x height)")


def read_label_map(path: str | Path) -> np.ndarray:
    """A single-channel label picture (index PNG, grey, 16-bit) as an [H, W] integer array."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in LABEL_MODES:
                return np.array(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"{path}: cannot read the label map ({err})") from None
    raise UserInputError(f"{path}: expected a single-channel label map, got a {mode} picture")


ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) of a picture as displayed (after its EXIF rotation), from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except FileNotFoundError:
        raise UserInputError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"{path}: cannot read image: {err}") from None
    return (height, width) if orientation in ROTATED else (width, height)
