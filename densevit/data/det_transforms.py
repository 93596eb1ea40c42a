"""Detection augmentation presets (albumentations), DETR's recipe by default.

Train: horizontal flip, then either a random resize of the short side (480-800 in steps of
32, long side at most 1333) or DETR's crop branch (resize the short side to 400/500/600,
crop a random 384-600 region, resize again). Val: short side 800, long side at most 1333.
Boxes travel as pixel (x1, y1, x2, y2) and are clipped; boxes the crop removes are dropped.
Sizes are arguments, so small demos can train on small images.
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from densevit.data.compose import Compose

DETR_SCALES = tuple(range(480, 801, 32))


class RandomShortSideResize(A.SmallestMaxSize):
    """Resize so that the short side is one of ``max_size`` (chosen at random), unless that
    makes the long side exceed ``long_side_limit``, in which case the long side is the limit."""

    def __init__(self, sizes: Sequence[int], long_side_limit: int | None = None, p: float = 1.0) -> None:
        super().__init__(max_size=list(sizes), p=p)
        self.long_side_limit = long_side_limit

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        size = self.py_random.choice(self.max_size)
        scale = size / min(height, width)
        if self.long_side_limit and max(height, width) * scale > self.long_side_limit:
            scale = self.long_side_limit / max(height, width)
        return {"scale": scale}


class RandomSizeCrop(BaseCrop):
    """Crop a region whose height and width are drawn from [min_size, min(side, max_size)]."""

    def __init__(self, min_size: int, max_size: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_size = min_size
        self.max_size = max_size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        crop_h = self.py_random.randint(min(self.min_size, height), min(height, self.max_size))
        crop_w = self.py_random.randint(min(self.min_size, width), min(width, self.max_size))
        y0 = self.py_random.randint(0, height - crop_h)
        x0 = self.py_random.randint(0, width - crop_w)
        return {"crop_coords": (x0, y0, x0 + crop_w, y0 + crop_h)}


def _compose(transforms: list[A.BasicTransform]) -> Compose:
    transforms = [*transforms, A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)]
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_area=1.0)
    return Compose(transforms, bbox_params=bbox_params)


def train_transforms(scales: Sequence[int] = DETR_SCALES, max_size: int = 1333,
                     crop_resize_scales: Sequence[int] = (400, 500, 600),
                     crop_size: tuple[int, int] = (384, 600), crop: bool = True,
                     hflip: float = 0.5) -> Compose:
    """DETR's training augmentation; ``crop=False`` leaves out the crop branch."""
    resize = RandomShortSideResize(scales, max_size)
    if crop:
        crop_branch = A.Sequential([
            RandomShortSideResize(crop_resize_scales),
            RandomSizeCrop(*crop_size),
            RandomShortSideResize(scales, max_size),
        ])
        resize = A.OneOf([resize, crop_branch], p=1.0)
    return _compose([A.HorizontalFlip(p=hflip), resize])


def val_transforms(size: int = 800, max_size: int = 1333) -> Compose:
    """Deterministic resize of the short side to ``size`` (long side at most ``max_size``)."""
    return _compose([RandomShortSideResize([size], max_size)])


def apply(transforms: A.Compose, image: np.ndarray, boxes_xyxy: np.ndarray,
          labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``transforms`` on an HWC uint8 image and its pixel xyxy boxes ->
    (normalised float32 HWC image, boxes [N,4] float32 pixel xyxy, labels [N] int64)."""
    out = transforms(image=image, bboxes=boxes_xyxy.reshape(-1, 4), labels=labels)
    boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    return out["image"], boxes, np.asarray(out["labels"], dtype=np.int64)
