"""Pictures with label maps: street scenes (CamVid, Cityscapes, ADE20K) and any folder pair (2D medical sets).

* CamVid (SegNet layout): ``ROOT/{train,val,test}/NAME.png`` and ``ROOT/{split}annot/NAME.png``,
  labels 0-10 and 11 = void (mapped to the ignore index).
* Cityscapes: ``ROOT/leftImg8bit/{split}/CITY/X_leftImg8bit.png`` and
  ``ROOT/gtFine/{split}/CITY/X_gtFine_labelIds.png``; label ids map to the 19 train ids.
* ADE20K: ``ROOT/images/{training,validation}/X.jpg`` and ``ROOT/annotations/{split}/X.png``;
  ``reduce_zero_label``: 0 (other) becomes the ignore index and 1-150 become 0-149.
* ``images``: a folder of pictures and a folder of label maps (and optionally of field-of-view
  masks) paired by name (:mod:`densevit.data.pairing`), e.g. DRIVE's ``21_training.tif`` with
  ``21_manual1.gif`` and ``21_training_mask.gif``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from densevit.data import IMAGE_SUFFIXES
from densevit.data.compose import Augmented
from densevit.data.images import LABEL_MODES, read_label_map, read_rgb
from densevit.data.labels import apply_fov
from densevit.data.pairing import PICTURE_SUFFIXES, pair_label_files
from densevit.data.sample_checks import (
    BadSamples,
    BadSamplesPolicy,
    check_label_values,
    one_line,
)
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


def label_lookup(kind: str, ignore_index: int, void_labels: tuple[int, ...] = (), binary: bool = False,
                 size: int = 256) -> np.ndarray:
    """A table from label-file values to train ids (``ignore_index`` for void); ``binary``: 255 -> 1
    (0/255 masks); ``size``: values up to ``size - 1`` (16-bit label maps need more than 256)."""
    table = np.arange(size, dtype=np.int64)
    if kind == "cityscapes":
        table[:] = ignore_index
        for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
            table[label_id] = train_id
    elif kind == "ade20k":  # reduce_zero_label
        table = np.where(table == 0, ignore_index, table - 1)
        table[255] = ignore_index
    for value in void_labels:
        table[value] = ignore_index
    if binary:
        table[255] = 1
    return table


def find_pairs(kind: str, root: Path, split: str) -> list[tuple[Path, Path, None]]:
    """``(image, label, None)`` paths of ``split`` under ``root`` in the layout of ``kind``."""
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
    return [(image, label, None) for image, label in pairs]


def picture_header(path: Path, what: str, verify: bool = False) -> tuple[str, tuple[int, int]]:
    """``(PIL mode, (height, width))`` of a picture from its header; ``verify``: the whole file is
    read and checked too (PNG checksums: a truncated PNG fails). One error naming the file."""
    try:
        if Path(path).stat().st_size == 0:
            raise UserInputError(f"{path}: cannot read the {what}: the file is empty (0 bytes)")
        with Image.open(path) as picture:
            mode, (width, height) = picture.mode, picture.size
            if verify:
                picture.verify()
    except UnidentifiedImageError:
        raise UserInputError(f"{path}: cannot read the {what}: not a picture file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UserInputError):
            raise
        raise UserInputError(f"{path}: cannot read the {what} ({type(err).__name__}: {one_line(err)})") from None
    return mode, (height, width)


def check_sample(image: Path, label: Path, fov: Path | None = None) -> None:
    """One picture, its label map and field-of-view mask, from their headers: each readable, the
    label map single-channel (class indices: grey, 16-bit or palette), all of one size."""
    _, size = picture_header(image, "image", verify=True)
    mode, label_size = picture_header(label, "label map", verify=True)
    if mode not in LABEL_MODES:
        raise UserInputError(
            f"{label}: expected a single-channel label map (a class index per pixel: grey, 16-bit or palette "
            f"PNG), got a picture of mode {mode}; colour-coded label maps must be converted to class indices")
    if label_size != size:
        raise UserInputError(f"{label}: label map size {label_size[1]}x{label_size[0]} differs from image "
                             f"{image} size {size[1]}x{size[0]} (width x height)")
    if fov is not None:
        _, fov_size = picture_header(fov, "field-of-view mask", verify=True)
        if fov_size != size:
            raise UserInputError(f"{fov}: field-of-view mask size {fov_size[1]}x{fov_size[0]} differs from image "
                                 f"{image} size {size[1]}x{size[0]} (width x height)")


class LabelMapDataset(Augmented, Dataset):
    """``{"image": [3,H,W] float, "mask": [H,W] int64, "path": str}`` from pictures and label maps.

    ``lookup`` maps label-file values to class indices (void to the ignore index); a value
    beyond it is an error naming the file, and so (given ``num_classes``) is a class index
    that is neither below ``num_classes`` nor ``ignore_index``. Where a field-of-view mask is
    0 the mask holds ``ignore_index`` (those pixels are neither trained on nor scored).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path, Path | None]],
        lookup: np.ndarray,
        transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]],
        ignore_index: int = 255,
        num_classes: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.lookup = lookup
        self.transform = transform
        self.ignore_index = ignore_index
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self, i: int) -> np.ndarray:
        """The class-index map [H,W] of sample ``i``, before augmentation."""
        image_path, label_path, fov_path = self.samples[i]
        label = read_label_map(label_path)
        if label.size and (label.min() < 0 or label.max() >= len(self.lookup)):
            raise UserInputError(f"{label_path}: label value {int(label.max())} outside 0..{len(self.lookup) - 1}")
        mask = apply_fov(self.lookup[label], fov_path, self.ignore_index)
        check_label_values(mask, label_path, self.num_classes, self.ignore_index, "pixel")
        return mask

    def check(self, policy: BadSamplesPolicy = "raise", what: object = "data", values: bool = True) -> None:
        """Check every sample now: its files' headers (:func:`check_sample`) and, with ``values``,
        its label values (the whole label map is read, as :meth:`labels` reads it). A bad sample
        raises, or with ``policy="drop"`` is left out with one warning for all of them."""
        bad = BadSamples(policy, what, "images")

        def fine(i: int) -> bool:
            check_sample(*self.samples[i])
            if values:
                self.labels(i)
            return True

        total = len(self.samples)
        self.samples = [sample for i, sample in enumerate(self.samples) if bad.keep(lambda: fine(i))]
        bad.report(total)

    def __getitem__(self, i: int) -> dict[str, object]:
        self.seed_sample(i)
        image_path, label_path, _ = self.samples[i]
        image = read_rgb(image_path)
        mask = self.labels(i)
        if mask.shape != image.shape[:2]:
            raise UserInputError(
                f"{label_path}: label size {mask.shape} differs from image {image_path} size {image.shape[:2]}"
            )
        image_t, mask_t = self.transform(image, mask)
        return {"image": image_t, "mask": mask_t, "path": str(image_path)}


def image_label_samples(images: Path, labels: Path, image_endings: Sequence[str] = (),
                        label_endings: Sequence[str] = (), fov: Path | None = None,
                        fov_endings: Sequence[str] = ()) -> list[tuple[Path, Path, Path | None]]:
    """``(picture, label map, field-of-view mask or None)`` of two (or three) folders paired by name."""
    pairs = pair_label_files(Path(labels), Path(images), PICTURE_SUFFIXES, label_endings, image_endings,
                             Path(fov) if fov else None, fov_endings)
    return [(p.item, p.label, p.fov) for p in pairs]
