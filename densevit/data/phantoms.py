"""Synthetic abdominal CT phantoms written as NIfTI, for demos and tests.

Each case is a body-shaped ellipse of soft tissue in air, with organ-like ellipsoids inside
(a large "liver", a "spleen" and two "kidneys"), low-frequency texture and Gaussian noise,
in Hounsfield units. Positions, sizes and intensities vary from case to case. Files follow
the Medical Segmentation Decathlon layout (``imagesTr``/``labelsTr``), so the ordinary NIfTI
loader reads them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

PHANTOM_CLASSES = ("background", "liver", "spleen", "kidney")
# Mean HU per class: tissue, liver, spleen, kidney (organ contrast a little above the noise).
_HU = {0: 30.0, 1: 110.0, 2: 170.0, 3: 240.0}


def _ellipsoid(shape: Sequence[int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def make_phantom(rng: np.random.Generator, shape: Sequence[int] = (64, 64, 24)) -> tuple[np.ndarray, np.ndarray]:
    """One case: CT in HU (int16) and labels (uint8), both of ``shape`` (x, y, z)."""
    shape = tuple(shape)
    size = np.array(shape, dtype=np.float32)
    centre = size / 2
    body = _ellipsoid(shape, centre, size * np.array([0.46, 0.40, 0.9]))
    label = np.zeros(shape, dtype=np.uint8)
    jitter = lambda scale: rng.uniform(-scale, scale, 3) * size  # noqa: E731 - short local helper

    liver = _ellipsoid(shape, centre + np.array([-0.14, -0.06, 0.0]) * size + jitter(0.03),
                       size * np.array([0.17, 0.20, 0.40]) * rng.uniform(0.85, 1.15, 3))
    spleen = _ellipsoid(shape, centre + np.array([0.18, -0.10, 0.05]) * size + jitter(0.03),
                        size * np.array([0.09, 0.12, 0.25]) * rng.uniform(0.85, 1.15, 3))
    label[liver & body] = 1
    label[spleen & body & (label == 0)] = 2
    for side in (-1, 1):
        kidney = _ellipsoid(shape, centre + np.array([0.12 * side, 0.17, -0.05]) * size + jitter(0.02),
                            size * np.array([0.07, 0.08, 0.18]) * rng.uniform(0.85, 1.15, 3))
        label[kidney & body & (label == 0)] = 3

    ct = np.full(shape, -1000.0, dtype=np.float32)
    for cls, hu in _HU.items():
        ct[(label == cls) & body] = hu + rng.normal(0, 10)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=3)
    texture *= 15.0 / texture.std()
    ct += body * texture + rng.normal(0, 20, shape)
    return np.round(ct).astype(np.int16), label


def write_phantoms(
    out_dir: Path, num_cases: int, seed: int = 0, shape: Sequence[int] = (64, 64, 24),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
) -> Path:
    """Write ``num_cases`` phantoms to ``out_dir/imagesTr`` and ``out_dir/labelsTr``; returns ``out_dir``.

    The set is written to a temporary folder and renamed into place, so that processes
    starting together (one per GPU) never read a half-written set; if another process got
    there first, its identical set is kept.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        rng = np.random.default_rng(seed)
        affine = np.diag([*spacing, 1.0])
        for i in range(num_cases):
            ct, label = make_phantom(rng, shape)
            name = f"phantom_{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(ct, affine), str(tmp / "imagesTr" / name))
            nib.save(nib.Nifti1Image(label, affine), str(tmp / "labelsTr" / name))
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "imagesTr").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
