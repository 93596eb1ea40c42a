"""Writing prediction files atomically: label maps, label volumes, pictures and COCO results."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from densevit.io import atomic_path, write_json_atomic


def write_png(array: np.ndarray, path: Path) -> Path:
    """An [H,W] label map (uint8 when the labels fit, else 16-bit) or an [H,W,3] picture as PNG."""
    if array.ndim == 2 and array.dtype != np.uint8:
        array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def write_picture(picture: Image.Image, path: Path) -> Path:
    """A PIL picture as PNG."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def write_label_volume(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """Labels [X,Y,Z] as NIfTI with the affine and header (spacing, orientation) of ``reference``."""
    header = reference.header.copy()
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.int16
    header.set_data_dtype(dtype)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(labels.astype(dtype), reference.affine, header), str(tmp))
    return path


def write_coco_results(results: list[dict[str, Any]], path: Path) -> Path:
    """Detections in the COCO results format (a list of ``image_id, category_id, bbox, score``)."""
    write_json_atomic(results, path, indent=None)
    return path
