"""Volumes that SimpleITK reads and writes: DICOM series folders, NRRD (``.nrrd``, ``.nhdr``) and
MetaImage (``.mha``, ``.mhd``), given the axis order and orientation convention of the NIfTI reader.

The NIfTI reader gives nibabel's voxel array, indexed ``(x, y, z)`` = ``(i, j, k)``, and an affine
that maps a voxel index to RAS+ millimetres. SimpleITK's ``GetArrayFromImage`` is indexed
``(z, y, x)``, and its geometry is in LPS+: voxel ``(i, j, k)`` lies at
``origin + direction @ (spacing * (i, j, k))``. So the array is transposed, and the affine is
``diag(-1, -1, 1) @ [[direction * spacing, origin], [0, 1]]``: the same physical volume saved
as NIfTI and as NRRD/MHA/DICOM reads as the same array with the same affine.

SimpleITK is the optional extra ``densevit[medical]``, imported only when such a file is read or
written. This module imports no PyTorch and no nibabel (``densevit score`` reads label volumes).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from densevit.errors import UserInputError, one_line, suspicious
from densevit.io import atomic_path

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
# Predictions are single files: a detached header (.nhdr, .mhd) gives its one-file sibling.
WRITTEN_SUFFIX = {".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}
FORMAT_NAMES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
DICOM_SUFFIXES = (".dcm", ".ima")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# The header field of a detached header that names its voxel file.
_DATA_FILE_FIELD = {".mhd": re.compile(r"^ElementDataFile\s*=\s*(.+?)\s*$", re.M),
                    ".nhdr": re.compile(r"^data ?file\s*:\s*(.+?)\s*$", re.M)}


def sitk_suffix(name: str) -> str | None:
    """The SimpleITK volume suffix that ``name`` ends with (any case), or None."""
    lowered = name.lower()
    return next((s for s in SITK_SUFFIXES if lowered.endswith(s)), None)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:  # a DICOM file without a suffix: 128 bytes of preamble, then "DICM"
            return f.read(132)[128:] == b"DICM"
    except OSError:  # unreadable: not taken for DICOM here; reading it later says why
        return False


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM files itself (``.dcm``/``.ima``, or files with the DICOM preamble)."""
    return folder.is_dir() and any(p.is_file() and _is_dicom_file(p) for p in folder.iterdir())


def simpleitk(path: object) -> Any:
    """The SimpleITK module, or one error naming ``path`` and the extra to install."""
    try:
        import SimpleITK
    except ImportError:
        raise UserInputError(f"{path}: reading and writing DICOM, NRRD and MetaImage volumes needs SimpleITK: "
                             "pip install 'densevit[medical]'") from None
    return SimpleITK


@contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Collect what ITK's C++ code prints on file descriptor 2 (MetaImage and GDCM complain
    there); the list gets the text, so that a failed read is reported in one line."""
    collected: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield collected
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            collected.append(sink.read().decode(errors="replace"))


def _itk_text(text: str) -> str:
    """ITK's message on one line, without its source location and object address."""
    text = re.sub(r"WARNING: In \S+, line \d+\s+|ITK ERROR: |sitk::ERROR: |^MetaImage: |\[\w+\] \w+: ", "", text.strip())
    return one_line(re.sub(r"(\w+) ?\(0x[0-9a-f]+\): ", r"\1: ", text))


def _reason(err: RuntimeError, printed: str) -> str:
    """The telling part of a failed read: what ITK's C++ code printed (MetaImage's "data not read
    completely"), else the exception's last line."""
    if printed.strip():
        return _itk_text(printed)
    lines = [line for line in str(err).splitlines() if line.strip()]
    if "Unable to determine ImageIO reader" in lines[-1]:
        return "not a file of a format SimpleITK reads"
    return _itk_text(lines[-1])


def _check_data_file(path: Path, suffix: str) -> None:
    """A detached header (``.mhd``, ``.nhdr``) whose voxel file is missing: one error naming both."""
    text = path.read_bytes()[:65536].decode("latin-1")
    match = _DATA_FILE_FIELD[suffix].search(text)
    name = match.group(1) if match else ""
    if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name:
        return  # voxels in the header's own file, or a file list: SimpleITK says what is wrong
    if not (path.parent / name).is_file():
        field = "ElementDataFile" if suffix == ".mhd" else "data file"
        raise UserInputError(f"{path}: its voxel file {path.parent / name} ({field}) is missing")


def affine_of(image: Any) -> np.ndarray:
    """The 4x4 RAS+ affine of a 3D SimpleITK image: voxel ``(i, j, k)`` -> millimetres."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=np.float64)
    return affine


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in millimetres along ``(x, y, z)``: the lengths of the affine's columns."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


def _checked_3d(image: Any, path: Path) -> np.ndarray:
    """The voxels ``(x, y, z)`` of a 3D single-component image, else one error naming ``path``."""
    size = "x".join(map(str, image.GetSize()))
    if image.GetDimension() != 3:
        raise UserInputError(f"{path}: expected a 3D volume, got a {image.GetDimension()}D image of size {size}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} "
                             f"(a vector image of size {size}); give each modality as its own file")
    return simpleitk(path).GetArrayFromImage(image).transpose(2, 1, 0)


def dicom_series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, sorted by slice position (GDCM's order);
    a folder with no series, or with several (listed with their slice counts), is an error."""
    sitk = simpleitk(folder)
    with _native_stderr():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
    if not series:
        raise UserInputError(f"{folder}: no DICOM series found (expected the DICOM slices of one series)")
    if len(series) > 1:
        listed = ", ".join(f"{uid} ({len(files[uid])} slices)" for uid in series)
        raise UserInputError(f"{folder}: {len(series)} DICOM series ({listed}); expected one series per folder: "
                             "move each series into a folder of its own")
    return list(files[series[0]])


def read_sitk_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(voxels [X,Y,Z], 4x4 RAS+ affine)`` of an NRRD/MetaImage file or a DICOM series folder.

    Unreadable files (empty, truncated, not the format their name says, a detached header
    without its voxel file), images that are not 3D or hold several values per voxel, and
    folders with no DICOM series or several: one error naming the file or folder.
    """
    path = Path(path)
    sitk = simpleitk(path)
    if path.is_dir():
        what, files = "DICOM series", dicom_series_files(path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
    else:
        suffix = sitk_suffix(path.name) or path.suffix.lower()
        what = f"{FORMAT_NAMES.get(suffix, suffix)} file"
        if path.is_file() and path.stat().st_size == 0:
            raise UserInputError(f"{path}: cannot read the {what}: the file is empty (0 bytes)")
        if suffix in _DATA_FILE_FIELD:
            _check_data_file(path, suffix)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
    with _native_stderr() as printed:
        try:
            image = reader.Execute()
        except RuntimeError as err:
            failure = err
        else:
            failure = None
    if failure is not None:
        raise UserInputError(f"{path}: cannot read the {what} ({_reason(failure, printed[0])})") from None
    if printed[0].strip():  # read, with a complaint (DICOM slices not evenly spaced...): pass it on
        suspicious(f"{path}: {_itk_text(printed[0])}")
    return _checked_3d(image, path), affine_of(image)


def write_sitk_volume(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Voxels [X,Y,Z] as an NRRD or MetaImage file (by ``path``'s suffix, compressed) whose spacing,
    origin and direction are those of ``affine`` (RAS+, as :func:`affine_of` gives); atomic."""
    sitk = simpleitk(path)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    linear = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((linear / spacing).flatten().tolist())
    image.SetOrigin((_LPS_TO_RAS @ affine[:3, 3]).tolist())
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
