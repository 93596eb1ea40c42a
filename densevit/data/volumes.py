"""CT/MRI volumes: NIfTI image/label pairs and TransUNet's Synapse files, as 2D slices or whole cases.

Layouts read by :func:`find_nifti_cases`:

* Medical Segmentation Decathlon: ``ROOT/imagesTr/NAME.nii.gz`` (3D, or 4D with modalities
  last) or nnU-Net's ``NAME_0000.nii.gz, NAME_0001.nii.gz...``, and ``ROOT/labelsTr/NAME.nii.gz``.
* Case folders: ``ROOT/CASE/<modality>.nii.gz`` for each modality named in the config, and
  ``ROOT/CASE/<label>.nii.gz``; ``ROOT`` itself may be the one case folder.

Files may also be NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``, ``.mhd``), read through
SimpleITK (``densevit[medical]``) into the same arrays and affines as NIfTI. Arrays keep NIfTI's
(x, y, z) order; slices are taken along the last axis. The modalities of a case must lie on one
voxel grid (same shape, spacing, origin and direction). Training iterates
over slices (:class:`SliceDataset`); evaluation over whole cases (:class:`CaseDataset`), so
that Dice and HD95 are computed per volume.

Cases are read whole when the data is opened, and checked then (:mod:`densevit.data.volume_readers`
reads and checks each file): a bad case stops the run with one error naming the file, or with
``bad_samples="drop"`` is left out, with one warning counting the dropped cases.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from densevit.data.compose import Augmented
from densevit.data.sample_checks import BadSamples, BadSamplesPolicy, check_label_values
from densevit.data.volume_readers import (  # noqa: F401 - read_nifti is part of this module's interface
    VOLUME_SUFFIXES,
    VolumeGeometry,
    check_synapse_npz,
    read_image_volume,
    read_label,
    read_nifti,
    read_synapse_h5,
    read_synapse_npz,
)
from densevit.errors import UserInputError

Normalisation = Literal["ct", "zscore", "none"]


@dataclass
class VolumeCase:
    """One case: ``image`` [C, X, Y, Z] float32 (preprocessed), ``label`` [X, Y, Z] int64 or None;
    ``header``: the first image's NIfTI header (None for other formats), written back with predictions."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, ...]
    image_paths: tuple[Path, ...]
    label_path: Path | None
    header: Any = None


# ----------------------------------------------------------------------------- preprocessing


def window_ct(hu: np.ndarray, window: Sequence[float] = (-125.0, 275.0)) -> np.ndarray:
    """Clip Hounsfield units to ``window`` and scale to [0, 1] (TransUNet's Synapse preprocessing)."""
    low, high = float(window[0]), float(window[1])
    return ((np.clip(hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def zscore(volume: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the non-zero voxels (the brain in skull-stripped MRI)."""
    volume = volume.astype(np.float32)
    inside = volume != 0
    if not inside.any():
        return volume
    mean, std = volume[inside].mean(), volume[inside].std()
    out = np.zeros_like(volume)
    out[inside] = (volume[inside] - mean) / max(float(std), 1e-8)
    return out


def normalise(volume: np.ndarray, how: Normalisation, ct_window: Sequence[float]) -> np.ndarray:
    """Apply the configured intensity normalisation to one modality."""
    if how == "ct":
        return window_ct(volume, ct_window)
    if how == "zscore":
        return zscore(volume)
    return volume.astype(np.float32)


# ----------------------------------------------------------------------------- reading files


def _strip_volume_suffix(name: str) -> str | None:
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _volume_in(folder: Path, stem: str) -> Path | None:
    for suffix in VOLUME_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def find_nifti_cases(root: Path, modalities: Sequence[str] = (), label_name: str = "") -> list[tuple[str, list[Path], Path | None]]:
    """``(case_id, image files (one per modality), label file or None)`` for every case under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"{root}: data root not found (expected a folder of NIfTI cases)")
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return _decathlon_cases(root)
    if not modalities or not label_name:
        raise UserInputError(
            f"{root}: case folders need data.modalities (image file stems) and data.label_name "
            "(label file stem), or an imagesTr/labelsTr layout"
        )
    folders = [root] if _volume_in(root, label_name) or _volume_in(root, modalities[0]) else sorted(
        p for p in root.iterdir() if p.is_dir()
    )
    cases = []
    for folder in folders:
        images = [_volume_in(folder, m) for m in modalities]
        missing = [m for m, p in zip(modalities, images) if p is None]
        if missing:
            raise UserInputError(f"{folder}: missing modality file(s) {missing} "
                                  f"({', '.join(VOLUME_SUFFIXES)})")
        cases.append((folder.name, images, _volume_in(folder, label_name)))
    if not cases:
        raise UserInputError(f"{root}: no case folders found")
    return cases


def _decathlon_cases(root: Path) -> list[tuple[str, list[Path], Path | None]]:
    image_dir = root / "imagesTr" if (root / "imagesTr").is_dir() else root / "imagesTs"
    grouped: dict[str, list[Path]] = {}
    for path in sorted(image_dir.iterdir()):
        stem = _strip_volume_suffix(path.name)
        if stem is None or stem.startswith("."):
            continue
        match = re.fullmatch(r"(.+)_(\d{4})", stem)  # nnU-Net: one file per modality
        grouped.setdefault(match.group(1) if match else stem, []).append(path)
    if not grouped:
        raise UserInputError(f"{image_dir}: no {'/'.join(VOLUME_SUFFIXES)} images")
    label_dir = root / "labelsTr"
    return [(case, files, _volume_in(label_dir, case)) for case, files in grouped.items()]


def check_same_grid(geometry: VolumeGeometry, path: Path, reference: VolumeGeometry, reference_path: Path) -> None:
    """The modality ``path`` lies on the voxel grid of ``reference_path`` (spacing, origin and
    direction within 1e-4, as float32 headers store them); else one error naming both and what differs."""
    if np.allclose(geometry.affine, reference.affine, rtol=1e-5, atol=1e-4):
        return
    ours, theirs = ({"spacing": np.asarray(g.spacing), "origin": g.affine[:3, 3],
                     "direction": g.affine[:3, :3] / np.asarray(g.spacing)} for g in (geometry, reference))
    differ = [k for k in ours if not np.allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-4)]

    def described(g: VolumeGeometry) -> str:
        return (f"spacing {tuple(round(float(v), 4) for v in g.spacing)}, origin "
                f"{tuple(round(float(v), 3) for v in g.affine[:3, 3])} (RAS)")
    raise UserInputError(f"{path}: voxel grid ({described(geometry)}) differs in {' and '.join(differ)} from "
                         f"{reference_path} ({described(reference)}); expected the modalities of a case on one grid "
                         "(same spacing, origin and direction)")


def model_takes(channels: int, in_chans: int | None) -> bool:
    """Whether a model of ``in_chans`` input channels takes ``channels`` (1 is repeated to 3)."""
    return in_chans is None or channels == in_chans or (channels == 1 and in_chans == 3)


def load_case(
    case_id: str,
    image_paths: Sequence[Path],
    label_path: Path | None,
    normalisation: Normalisation = "none",
    ct_window: Sequence[float] = (-125.0, 275.0),
    num_classes: int | None = None,
    ignore_index: int | None = None,
    in_chans: int | None = None,
) -> VolumeCase:
    """Read and preprocess one case; every problem is one error naming the file: unreadable
    files, NaN/Inf voxels, modalities on different voxel grids, image and label shapes that
    differ (both files and shapes named),
    labels that are not whole numbers, or (given ``num_classes``) not classes or
    ``ignore_index``, and (given ``in_chans``) a channel count the model does not take."""
    channels = []
    geometries = []
    for path in image_paths:
        data, geometry = read_image_volume(path)
        if geometries:
            check_same_grid(geometry, path, geometries[0], image_paths[0])
        geometries.append(geometry)
        stack = [data[..., i] for i in range(data.shape[-1])] if data.ndim == 4 else [data]
        for volume in stack:
            if volume.ndim != 3:
                raise UserInputError(f"{path}: expected a 3D (or 4D multi-modal) volume, got shape {data.shape}")
            if channels and volume.shape != channels[0].shape:
                raise UserInputError(
                    f"{path}: shape {volume.shape} differs from {image_paths[0]} shape {channels[0].shape}"
                )
            channels.append(normalise(volume, normalisation, ct_window))
    if not model_takes(len(channels), in_chans):
        raise UserInputError(
            f"{image_paths[0]}: {len(channels)} image channel(s) ({len(image_paths)} file(s), one channel per "
            f"modality or per 4th-axis volume) but the model takes {in_chans} (model.kwargs.in_chans)"
        )
    image = np.stack(channels)
    label = None
    if label_path is not None:
        label = read_label(label_path)
        if label.shape != image.shape[1:]:
            raise UserInputError(
                f"label {label_path} has shape {label.shape} but image {image_paths[0]} has shape "
                f"{image.shape[1:]}; image and label must cover the same voxels"
            )
        check_label_values(label, label_path, num_classes, ignore_index)
    first = geometries[0]
    return VolumeCase(case_id, image, label, first.affine, first.spacing, tuple(image_paths), label_path, first.header)


def load_nifti_cases(root: Path, modalities: Sequence[str] = (), label_name: str = "",
                     bad_samples: BadSamplesPolicy = "raise", **kw: Any) -> list[VolumeCase]:
    """Every case under ``root``, loaded and preprocessed (see :func:`load_case`); with
    ``bad_samples="drop"`` a case that fails is left out, with one warning for all of them."""
    found = find_nifti_cases(root, modalities, label_name)
    bad = BadSamples(bad_samples, root, "cases")
    cases = [bad.keep(lambda: load_case(cid, images, label, **kw)) for cid, images, label in found]
    bad.report(len(found))
    return [case for case in cases if case is not None]


def _synapse_case(path: Path, num_classes: int | None, ignore_index: int | None, in_chans: int | None) -> VolumeCase:
    if not model_takes(1, in_chans):
        raise UserInputError(f"{path}: 1 image channel but the model takes {in_chans} (model.kwargs.in_chans)")
    image, label = read_synapse_h5(path, num_classes, ignore_index)
    return VolumeCase(path.name.split(".")[0], image.transpose(1, 2, 0)[None], label.transpose(1, 2, 0),
                      np.eye(4), (1.0, 1.0, 1.0), (path,), path)


def load_synapse_cases(folder: Path, num_classes: int | None = None, ignore_index: int | None = None,
                       bad_samples: BadSamplesPolicy = "raise", in_chans: int | None = None) -> list[VolumeCase]:
    """TransUNet's Synapse test volumes ``*.npy.h5`` (``image`` and ``label`` [Z, H, W], already in [0, 1]);
    bad files raise or are dropped as :func:`load_nifti_cases` says."""
    paths = sorted(Path(folder).glob("*.h5"))
    if not paths:
        raise UserInputError(f"{folder}: no Synapse *.npy.h5 volumes")
    bad = BadSamples(bad_samples, folder, "volumes")
    cases = [bad.keep(lambda: _synapse_case(path, num_classes, ignore_index, in_chans)) for path in paths]
    bad.report(len(paths))
    return [case for case in cases if case is not None]


# ----------------------------------------------------------------------------- datasets

SliceTransform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class SliceDataset(Augmented, Dataset):
    """2D training slices of in-memory cases: ``{"image": [C,H,W] float, "mask": [H,W] int64}``.

    ``keep_empty`` is the fraction of slices without foreground that are kept (chosen once,
    with ``seed``), since mostly-empty volumes otherwise teach the model to say "background".
    """

    def __init__(self, cases: Sequence[VolumeCase], transform: SliceTransform, keep_empty: float = 1.0, seed: int = 0) -> None:
        self.cases = list(cases)
        self.transform = transform
        rng = np.random.default_rng(seed)
        self.index: list[tuple[int, int]] = []
        for c, case in enumerate(self.cases):
            if case.label is None:
                raise UserInputError(f"{case.image_paths[0]}: training case {case.case_id} has no label file")
            has_fg = case.label.reshape(-1, case.label.shape[-1]).any(axis=0)
            keep = has_fg | (rng.random(has_fg.shape[0]) < keep_empty)
            self.index += [(c, int(z)) for z in np.flatnonzero(keep)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.seed_sample(i)
        c, z = self.index[i]
        case = self.cases[c]
        image = np.ascontiguousarray(case.image[..., z].transpose(1, 2, 0))  # [H, W, C]
        image, mask = self.transform(image, case.label[..., z])
        return {"image": image, "mask": mask}


class SynapseSliceDataset(Augmented, Dataset):
    """TransUNet's ``train_npz/*.npz`` slices (``image`` [H,W] in [0,1], ``label`` [H,W]), read lazily.

    Opening checks every file's arrays from their headers (``image`` and ``label``, of one 2D
    shape), raising or dropping bad files as ``bad_samples`` says; the values (finite image,
    labels that are classes or ``ignore_index``) are checked as each slice is read, an error
    naming the file.
    """

    def __init__(self, folder: Path, transform: SliceTransform, num_classes: int | None = None,
                 ignore_index: int | None = None, bad_samples: BadSamplesPolicy = "raise") -> None:
        files = sorted(Path(folder).glob("*.npz"))
        if not files:
            raise UserInputError(f"{folder}: no Synapse .npz slices")
        bad = BadSamples(bad_samples, folder, "slices")
        self.files = [path for path in files if bad.keep(lambda: check_synapse_npz(path) or True)]
        bad.report(len(files))
        self.transform = transform
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.seed_sample(i)
        image, label = read_synapse_npz(self.files[i], self.num_classes, self.ignore_index)
        image, mask = self.transform(image[..., None], label)
        return {"image": image, "mask": mask}


class CaseDataset(Dataset):
    """Whole cases for evaluation: ``{"case_id", "image" [C,X,Y,Z], "label" [X,Y,Z], "spacing", "affine"}``."""

    def __init__(self, cases: Sequence[VolumeCase]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        case = self.cases[i]
        label = torch.from_numpy(case.label) if case.label is not None else None
        return {
            "case_id": case.case_id,
            "image": torch.from_numpy(case.image),
            "label": label,
            "spacing": case.spacing,
            "affine": case.affine,
        }
