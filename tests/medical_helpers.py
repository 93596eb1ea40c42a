"""Medical test inputs written with SimpleITK: a DICOM series as a scanner would write one."""
from __future__ import annotations

import locale
from pathlib import Path

import pytest

sitk = pytest.importorskip("SimpleITK")


def write_dicom_series(image, folder: Path, uid: str = "1.2.826.0.1.3680043.2.1125.7.1") -> Path:
    """``image`` as a DICOM series of 2D slices, with the position and orientation tags that place
    each slice (written in reverse order, so that only the positions give the order)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = uid.rsplit(".", 1)[-1]  # several series may share a folder
    d = image.GetDirection()
    text = lambda values: "\\".join(f"{v:.12g}" for v in values)  # noqa: E731 - DICOM decimal strings
    tags = {"0008|0060": "CT", "0020|000d": uid + ".0", "0020|000e": uid, "0018|0050": f"{image.GetSpacing()[2]:g}",
            "0020|0037": text((d[0], d[3], d[6], d[1], d[4], d[7]))}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    before = locale.setlocale(locale.LC_ALL)  # GDCM's DICOM writer leaves the process in the C locale
    try:
        for k in reversed(range(image.GetDepth())):
            piece = image[:, :, k]
            for tag, value in tags.items():
                piece.SetMetaData(tag, value)
            piece.SetMetaData("0020|0032", text(image.TransformIndexToPhysicalPoint((0, 0, k))))
            piece.SetMetaData("0020|0013", str(k + 1))
            writer.SetFileName(str(folder / f"{prefix}_slice{image.GetDepth() - k:03d}.dcm"))
            writer.Execute(piece)
    finally:
        locale.setlocale(locale.LC_ALL, before)
    return folder
