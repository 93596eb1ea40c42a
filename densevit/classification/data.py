"""Classification samples from disk: an ImageFolder tree or a ``path,label`` CSV, and timm's transforms.

A sample list is ``[(image path, class index)]``; :class:`ImageDataset` yields
``(image [3,H,W] float, class index, path)`` and :func:`collate` batches them as
``(images [B,3,H,W], {"labels": [B] int64, "paths": [str]})``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from densevit.data import IMAGE_SUFFIXES
from densevit.data.images import read_rgb
from densevit.errors import ConfigError, UserInputError
from densevit.evaluation.classification import read_path_label_csv

Sample = tuple[Path, int]


def folder_classes(split_dir: Path) -> list[str]:
    """The class folders of an ImageFolder split, sorted by name."""
    if not split_dir.is_dir():
        raise UserInputError(f"{split_dir}: no such folder (expected <root>/<split>/<class>/<images>)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserInputError(f"{split_dir}: holds no class folders (expected <split>/<class>/<images>)")
    return classes


def folder_samples(split_dir: Path, classes: Sequence[str]) -> list[Sample]:
    """Every picture under ``split_dir/<class>/`` (sorted), labelled by its folder's index in ``classes``.

    A class folder that ``classes`` lacks is an error (a validation class never trained on).
    """
    index = {name: i for i, name in enumerate(classes)}
    samples: list[Sample] = []
    for name in folder_classes(split_dir):
        if name not in index:
            raise UserInputError(f"{split_dir / name}: class {name!r} is not among the training classes "
                                 f"({', '.join(classes)})")
        files = sorted(p for p in (split_dir / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        samples += [(path, index[name]) for path in files]
    if not samples:
        raise UserInputError(f"{split_dir}: no pictures ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return samples


def read_label_csv(path: Path, check_files: bool = True) -> list[tuple[Path, str]]:
    """Rows ``(image path, label name)`` of a CSV with a header ``path,label`` (more columns are ignored).

    Image paths are relative to the CSV's folder (absolute ones stay as they are). A missing
    column, an empty cell or a missing image is one error naming the file and the row.
    """
    out = []
    for number, cells in read_path_label_csv(path)[1]:
        image = path.parent / cells["path"]
        if check_files and not image.is_file():
            raise UserInputError(f"{path}: row {number}: image {image} not found")
        out.append((image, cells["label"]))
    return out


def csv_samples(path: Path, classes: Sequence[str]) -> list[Sample]:
    """The rows of a ``path,label`` CSV as samples; a label not in ``classes`` names the row."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for number, (image, label) in enumerate(read_label_csv(path), start=2):
        if label not in index:
            raise UserInputError(f"{path}: row {number}: label {label!r} is not among the classes ({', '.join(classes)})")
        samples.append((image, index[label]))
    return samples


def build_transform(data: Any, training: bool) -> Callable[[Image.Image], Tensor]:
    """timm's transform for ``data`` (a :class:`~densevit.classification.config.ClassificationDataConfig`)."""
    from timm.data import create_transform

    if training and data.augment and data.auto_augment:
        _check_policy(data.auto_augment)
    if not training or not data.augment:
        return create_transform(data.img_size, is_training=False, interpolation=data.interpolation,
                                mean=tuple(data.mean), std=tuple(data.std), crop_pct=data.crop_pct)
    return create_transform(data.img_size, is_training=True, scale=tuple(data.scale), hflip=data.hflip,
                            color_jitter=data.color_jitter, auto_augment=data.auto_augment or None,
                            interpolation=data.interpolation, mean=tuple(data.mean), std=tuple(data.std),
                            re_prob=data.re_prob)


def _check_policy(policy: str) -> None:
    """timm's RandAugment with ``inc1`` posterizes to ``4 - int(0.4 * magnitude)`` bits: 0 at
    magnitude 10, which ``mstd`` noise reaches and recent Pillow (13) refuses (a crash in a loader
    worker, minutes into training). Capping the magnitude below 10 (``-mmax9``) avoids it."""
    from PIL import ImageOps

    if not policy.startswith("rand") or "inc1" not in policy.split("-") or any(
            part.startswith("mmax") for part in policy.split("-")):
        return
    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
    except ValueError:
        raise ConfigError(f"data.auto_augment: {policy!r} can posterize to 0 bits, which this Pillow refuses; "
                          f"cap the magnitude: {policy}-mmax9") from None


def read_picture(path: Path) -> Image.Image:
    """An RGB PIL picture (EXIF orientation applied); unreadable files name themselves."""
    return Image.fromarray(read_rgb(path))


class ImageDataset(Dataset):
    """``(image [3,H,W], class index, path)`` per sample, through ``transform``."""

    def __init__(self, samples: list[Sample], transform: Callable[[Image.Image], Tensor]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        path, label = self.samples[index]
        return self.transform(read_picture(path)), label, str(path)


def collate(samples: list[tuple[Tensor, int, str]]) -> tuple[Tensor, dict[str, Any]]:
    """Images [B,3,H,W] and ``{"labels": [B] int64, "paths": [B] str}``."""
    images, labels, paths = zip(*samples)
    return torch.stack(images), {"labels": torch.tensor(labels, dtype=torch.int64), "paths": list(paths)}
