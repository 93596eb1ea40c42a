"""Street-scene segmentation: image + label-PNG folders (CamVid, Cityscapes, ADE20K).

* CamVid (SegNet layout): ``ROOT/{train,val,test}/NAME.png`` and ``ROOT/{split}annot/NAME.png``,
  labels 0-10 and 11 = void (mapped to the ignore index).
* Cityscapes: ``ROOT/leftImg8bit/{split}/CITY/X_leftImg8bit.png`` and
  ``ROOT/gtFine/{split}/CITY/X_gtFine_labelIds.png``; label ids map to the 19 train ids.
* ADE20K: ``ROOT/images/{training,validation}/X.jpg`` and ``ROOT/annotations/{split}/X.png``;
  ``reduce_zero_label``: 0 (other) becomes the ignore index and 1-150 become 0-149.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from densevit.data import IMAGE_SUFFIXES
from densevit.data.images import read_label_map, read_rgb
from densevit.errors import UserInputError


@dataclass(frozen=True)
class ClassTable:
    """Class names and their colours for drawing."""

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]


CAMVID = ClassTable(
    ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"),
    ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
     (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
)

CITYSCAPES = ClassTable(
    ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
     "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"),
    ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
     (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
     (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
)

# Cityscapes label id -> train id (the official labels.py table; everything else is void).
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed, well-spread colour per class (for datasets without an official palette)."""
    rng = np.random.default_rng(12345)
    return [tuple(int(v) for v in rng.integers(30, 256, 3)) for _ in range(num_classes)]


def label_lookup(kind: str, ignore_index: int, void_labels: tuple[int, ...] = ()) -> np.ndarray:
    """A 256-entry table from label-file values to train ids (``ignore_index`` for void)."""
    table = np.arange(256, dtype=np.int64)
    if kind == "cityscapes":
        table[:] = ignore_index
        for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
            table[label_id] = train_id
    elif kind == "ade20k":  # reduce_zero_label
        table = np.where(table == 0, ignore_index, table - 1)
        table[255] = ignore_index
    for value in void_labels:
        table[value] = ignore_index
    return table


def find_pairs(kind: str, root: Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of ``split`` under ``root`` in the layout of ``kind``."""
    root = Path(root)
    if kind == "cityscapes":
        pairs = []
        for image in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            pairs.append((image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"))
    else:
        image_dir, label_dir = (
            (root / "images" / split, root / "annotations" / split) if kind == "ade20k"
            else (root / split, root / f"{split}annot")
        )
        if not image_dir.is_dir():
            raise UserInputError(f"{image_dir}: image folder not found for the {kind} layout, split {split!r}")
        pairs = [
            (image, label_dir / f"{image.stem}.png")
            for image in sorted(image_dir.iterdir())
            if image.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not pairs:
        raise UserInputError(f"{root}: no {kind} images found for split {split!r}")
    missing = [str(label) for _, label in pairs if not label.is_file()]
    if missing:
        raise UserInputError(f"{len(missing)} label file(s) missing, first: {missing[0]}")
    return pairs


class StreetDataset(Dataset):
    """``{"image": [3,H,W] float, "mask": [H,W] int64, "path": str}`` from image/label pairs."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        lookup: np.ndarray,
        transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        self.pairs = pairs
        self.lookup = lookup
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, object]:
        image_path, label_path = self.pairs[i]
        image = read_rgb(image_path)
        label = read_label_map(label_path)
        if label.shape != image.shape[:2]:
            raise UserInputError(
                f"{label_path}: label size {label.shape} differs from image {image_path} size {image.shape[:2]}"
            )
        image_t, mask = self.transform(image, self.lookup[label])
        return {"image": image_t, "mask": mask, "path": str(image_path)}
