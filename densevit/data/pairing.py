"""Pairing files of two folders by name: pictures with their label maps, predictions with ground truth.

Files pair by their path relative to their folder, without the file suffix (``.nii.gz`` and
``.nii``, ``.png`` and ``.gif`` pair) and without any of the given name endings
(``21_training.tif`` and ``21_manual1.gif`` pair once ``_training`` and ``_manual1`` are given).
Flat folders and folders of case folders both work; a ``pictures/`` folder (where
``densevit predict`` draws) is never read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from densevit.data import IMAGE_SUFFIXES
from densevit.data.sitk_volumes import (
    SITK_SUFFIXES,  # light: imports no SimpleITK or PyTorch
)
from densevit.errors import UserInputError

# Here rather than in densevit.data.volumes (which imports PyTorch), so that pairing files to score stays light.
NIFTI_SUFFIXES = (".nii.gz", ".nii")
PICTURE_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")
LABEL_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + PICTURE_SUFFIXES
SKIPPED_FOLDERS = ("pictures",)


@dataclass(frozen=True)
class LabelPair:
    """A ground-truth label file, the file it labels (``item``: a prediction to score, or a
    picture to train on) and its field-of-view mask, when there is one."""

    key: str
    label: Path
    item: Path
    fov: Path | None = None


def label_key(path: Path, root: Path, endings: Sequence[str] = ()) -> str:
    """``path`` relative to ``root``, without its label suffix and without one of ``endings``."""
    relative = path.relative_to(root).as_posix()
    lowered = relative.lower()
    suffix = next((s for s in LABEL_SUFFIXES if lowered.endswith(s)), "")
    stem = relative[: len(relative) - len(suffix)]
    for ending in sorted(endings, key=len, reverse=True):
        if ending and stem.endswith(ending):
            return stem[: -len(ending)]
    return stem


def label_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under ``root`` ending in ``suffixes``, outside ``pictures/`` folders, sorted."""
    if not root.is_dir():
        raise UserInputError(f"{root}: not a folder")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name.lower().endswith(tuple(suffixes))
        and not any(part in SKIPPED_FOLDERS for part in p.relative_to(root).parts[:-1])
    )


def _keyed(root: Path, suffixes: Sequence[str], endings: Sequence[str]) -> dict[str, Path]:
    keyed: dict[str, Path] = {}
    for path in label_files(root, suffixes):
        key = label_key(path, root, endings)
        if key in keyed:
            raise UserInputError(f"{path}: pairs like {keyed[key]} (both give {key!r}); keep one of them")
        keyed[key] = path
    return keyed


def pair_label_files(gt_dir: Path, pred_dir: Path, suffixes: Sequence[str] = LABEL_SUFFIXES,
                     gt_endings: Sequence[str] = (), pred_endings: Sequence[str] = (),
                     fov_dir: Path | None = None, fov_endings: Sequence[str] = (),
                     item_suffixes: Sequence[str] | None = None) -> list[LabelPair]:
    """Every file of ``pred_dir`` with its label file in ``gt_dir`` (see the module docstring).

    A file without a label is an error; so is a label file of the top folder without its file,
    and a case folder in which nothing pairs. Other files of a case folder (its images) are not
    label files to pair and are passed over. ``item_suffixes``: the suffixes of ``pred_dir``'s
    files when they differ from the labels' (pictures beside label maps).
    """
    gt = _keyed(gt_dir, suffixes, gt_endings)
    pred = _keyed(pred_dir, item_suffixes or suffixes, pred_endings)
    if not gt:
        raise UserInputError(f"{gt_dir}: no {' / '.join(suffixes)} files")
    paired_folders = {Path(key).parent for key in pred if key in gt}
    for key, path in gt.items():
        folder = Path(key).parent
        if key not in pred and (folder == Path(".") or folder not in paired_folders):
            raise UserInputError(f"{path}: no file of the same name in {pred_dir}")
    for key, path in pred.items():
        if key not in gt:
            raise UserInputError(f"{path}: no file of the same name in {gt_dir}")
    fov = _keyed(fov_dir, suffixes, fov_endings) if fov_dir is not None else {}
    pairs = []
    for key in sorted(pred):
        if fov_dir is not None and key not in fov:
            raise UserInputError(f"{gt[key]}: no field-of-view mask of the same name in {fov_dir}")
        pairs.append(LabelPair(key, gt[key], pred[key], fov.get(key)))
    return pairs


