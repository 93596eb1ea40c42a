"""Writing prediction files atomically: label maps, label volumes, pictures and COCO results."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from densevit.data.sitk_volumes import sitk_suffix, write_sitk_volume
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


def write_label_volume(labels: np.ndarray, affine: np.ndarray, path: Path,
                       header: nib.Nifti1Header | None = None) -> Path:
    """Labels [X,Y,Z] on the voxel grid ``affine`` ([4,4], voxel -> RAS+ mm): NIfTI (with the input's
    ``header`` when given), or for ``.nrrd``/``.mha`` paths NRRD/MetaImage with the same spacing,
    origin and direction (:func:`~densevit.data.sitk_volumes.write_sitk_volume`)."""
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.int16
    if sitk_suffix(path.name):
        return write_sitk_volume(labels.astype(dtype), affine, path)
    if header is None:  # a new header: millimetres, as DICOM, NRRD and MetaImage geometry is
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm")
    header = header.copy()
    header.set_data_dtype(dtype)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(labels.astype(dtype), affine, header), str(tmp))
    return path


def write_coco_results(results: list[dict[str, Any]], path: Path) -> Path:
    """Detections in the COCO results format (a list of ``image_id, category_id, bbox, score``)."""
    write_json_atomic(results, path, indent=None)
    return path
