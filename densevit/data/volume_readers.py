"""Reading volume files: NIfTI images and labels (and, through SimpleITK, NRRD, MetaImage and
DICOM series: :mod:`densevit.data.sitk_volumes`), TransUNet's Synapse ``.npz`` slices and ``.h5``
volumes. Each reader refuses a malformed file with one error line naming it: a file that cannot
be read (empty, not gzip, truncated), a missing array (and the arrays it has), NaN or infinite
voxels (and how many), labels that are not whole numbers or not classes.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.lib.format as npy_format

from densevit.data.pairing import NIFTI_SUFFIXES
from densevit.data.sample_checks import (
    check_finite,
    check_label_values,
    one_line,
    whole_labels,
)
from densevit.data.sitk_volumes import (
    SITK_SUFFIXES,
    read_sitk_volume,
    sitk_suffix,
    spacing_of,
)
from densevit.errors import UserInputError

SYNAPSE_ARRAYS = ("image", "label")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a volume's voxels lie: ``affine`` [4,4] maps voxel ``(x, y, z)`` to RAS+ millimetres,
    ``spacing`` is the voxel size (mm), ``header`` the NIfTI header of a NIfTI file (None for
    other formats), written back with predictions."""

    affine: np.ndarray
    spacing: tuple[float, ...]
    header: nib.Nifti1Header | None = None


def _reason(err: BaseException) -> str:
    kind = type(err)
    name = f"{kind.__module__}.{kind.__name__}" if kind.__name__ == "error" else kind.__name__  # zlib.error
    return f"{name}: {one_line(err)}"


def read_nifti(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The voxels of a NIfTI file (trailing length-1 axes dropped: ``(x, y, z, 1)`` label files)
    and the image object (affine, header); a file nibabel cannot read is one error naming it."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise UserInputError(f"{path}: cannot read the NIfTI file: the file is empty (0 bytes)")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel, gzip and zlib raise many types for bad files
        raise UserInputError(f"{path}: cannot read the NIfTI file ({_reason(err)})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, image


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeGeometry]:
    """Voxels ``[X,Y,Z]`` (``[X,Y,Z,C]`` for 4D NIfTI) and geometry of a NIfTI, NRRD or MetaImage
    file or a DICOM series folder, in NIfTI's axis order and orientation whatever the format."""
    path = Path(path)
    if path.is_dir() or sitk_suffix(path.name):
        data, affine = read_sitk_volume(path)
        return data, VolumeGeometry(affine, spacing_of(affine))
    data, image = read_nifti(path)
    return data, VolumeGeometry(image.affine, tuple(float(z) for z in image.header.get_zooms()[:3]), image.header)


def read_image_volume(path: str | Path) -> tuple[np.ndarray, VolumeGeometry]:
    """:func:`read_volume` of an image: NaN or infinite voxels are an error giving their count."""
    data, geometry = read_volume(path)
    check_finite(data, path)
    return data, geometry


def read_label(path: Path, num_classes: int | None = None, ignore_index: int | None = None) -> np.ndarray:
    """Integer label volume (int64); float files must hold whole numbers; with ``num_classes``
    every value must be a class or ``ignore_index``."""
    labels = whole_labels(read_volume(path)[0], path)
    check_label_values(labels, path, num_classes, ignore_index)
    return labels


# ----------------------------------------------------------------------------- Synapse files


def npz_arrays(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array of an ``.npz`` file, from the array headers only."""
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: cannot read the .npz file: the file is empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as f:
                    version = npy_format.read_magic(f)
                    header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                    shape, _, dtype = header(f)
                arrays[name[: -len(".npy")]] = (tuple(shape), dtype)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise UserInputError(f"{path}: cannot read the .npz file ({_reason(err)})") from None
    return arrays


def _require(path: Path, present: Any, what: str) -> None:
    names = sorted(present)
    missing = [k for k in SYNAPSE_ARRAYS if k not in names]
    if missing:
        has = ", ".join(names) if names else "none"
        raise UserInputError(f"{path}: no {' or '.join(repr(k) for k in missing)} {what} (the file has: {has})")


def check_synapse_npz(path: Path) -> None:
    """An ``.npz`` slice has ``image`` and ``label`` arrays of one 2D shape (headers only: cheap)."""
    arrays = npz_arrays(path)
    _require(path, arrays, "array")
    (image, _), (label, _) = arrays["image"], arrays["label"]
    if len(image) != 2 or image != label:
        raise UserInputError(f"{path}: expected 2D 'image' and 'label' of one shape, got {image} and {label}")


def read_synapse_npz(path: Path, num_classes: int | None = None,
                     ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image [H,W] float32, label [H,W] int64)`` of a Synapse ``.npz`` slice, checked."""
    try:
        with np.load(path) as data:
            _require(path, data.files, "array")
            image, label = data["image"], data["label"]
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile, zlib and numpy raise many types for bad files
        raise UserInputError(f"{path}: cannot read the .npz file ({_reason(err)})") from None
    if image.ndim != 2 or image.shape != label.shape:
        raise UserInputError(f"{path}: expected 2D 'image' and 'label' of one shape, got {image.shape} and {label.shape}")
    check_finite(image, path, "pixel")
    label = whole_labels(label, path, "pixel")
    check_label_values(label, path, num_classes, ignore_index, "pixel")
    return image.astype(np.float32), label


def read_synapse_h5(path: Path, num_classes: int | None = None,
                    ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image [Z,H,W] float32, label [Z,H,W] int64)`` of a Synapse ``.npy.h5`` volume, checked."""
    try:
        import h5py
    except ImportError as err:  # an optional extra
        raise UserInputError("reading Synapse .h5 volumes needs h5py: pip install 'densevit[h5]'") from err
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: cannot read the .h5 file: the file is empty (0 bytes)")
    try:
        with h5py.File(path, "r") as f:
            _require(path, f.keys(), "dataset")
            image, label = np.asarray(f["image"]), np.asarray(f["label"])
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... for bad files
        raise UserInputError(f"{path}: cannot read the .h5 file ({_reason(err)})") from None
    if image.ndim != 3 or image.shape != label.shape:
        raise UserInputError(f"{path}: expected 3D 'image' and 'label' of one shape, got {image.shape} and {label.shape}")
    check_finite(image, path)
    label = whole_labels(label, path)
    check_label_values(label, path, num_classes, ignore_index)
    return image.astype(np.float32), label
