"""RT-DETR's augmentation (rtdetrv2 ``dataloader.yml``) as albumentations pipelines.

Train, per sample: photometric distortion, zoom-out onto a canvas up to 4x the image, an SSD
min-IoU crop, horizontal flip, resize to a fixed ``size`` x ``size`` (aspect ratio not kept),
then float32 in [0, 1] (no ImageNet mean/std unless ``normalize``). Boxes whose width or
height falls under ``min_box_size`` pixels are dropped after every step, which covers the two
``SanitizeBoundingBoxes`` of RT-DETR (after the crop and after the resize). Val: the resize
and the conversion only.

The *strong* operations, photometric distortion, zoom-out and IoU crop, stop from
``stop_epoch`` on (RT-DETR: epoch 71 of 72, 117 of 120; epochs count from 0), so the last
epochs train on plain flipped and resized pictures: call ``set_epoch`` on the training
pipeline before each epoch's loader iterator is made (loader workers copy the pipeline then,
so this does not reach persistent workers).

Per batch, :class:`MultiScaleBatchResize` resizes the stacked images to a random square
scale (RT-DETR's ``BatchImageCollateFunction``) until its own stop epoch.

Boxes travel as pixel (x1, y1, x2, y2) through :func:`densevit.data.det_transforms.apply`.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import albumentations as A
import numpy as np
import torch.nn.functional as F
from albumentations.augmentations.crops.transforms import BaseCrop
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor

from densevit.data.compose import Compose, StopsAtEpoch, UntilEpoch

# RT-DETR's batch scales: 480..800 in steps of 32, 640 listed three times so that it is drawn
# 3/13 of the time and every other scale 1/13.
RTDETR_SCALES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)
# SSD's minimum IoUs between a kept box and the crop; 1.0 (or more) means "keep the whole image".
SSD_MIN_IOUS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# torchvision's RandomPhotometricDistort factors (brightness and contrast multiply, hue shifts
# by a fraction of the colour circle).
BRIGHTNESS = (0.875, 1.125)
CONTRAST = (0.5, 1.5)
SATURATION = (0.5, 1.5)
HUE = (-0.05, 0.05)


def photometric_distort(p: float = 0.5) -> A.Sequential:
    """RT-DETR's ``RandomPhotometricDistort``: brightness, contrast, saturation, hue and a channel
    permutation, each applied on its own with probability ``p`` (so ``p`` is not the
    probability of the whole distortion); contrast comes before or after saturation and hue
    with even odds, as in torchvision. Pixels only: boxes and shape are unchanged."""

    def jitter(**factor: tuple[float, float]) -> A.ColorJitter:
        # one factor per ColorJitter, the others at identity, so that each op has its own coin
        return A.ColorJitter(**{"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, **factor}, p=p)

    def saturation_hue() -> list[A.ColorJitter]:
        return [jitter(saturation=SATURATION), jitter(hue=HUE)]

    contrast_first = A.Sequential([jitter(contrast=CONTRAST), *saturation_hue()], p=1.0)
    contrast_last = A.Sequential([*saturation_hue(), jitter(contrast=CONTRAST)], p=1.0)
    return A.Sequential([
        jitter(brightness=BRIGHTNESS),
        A.OneOf([contrast_first, contrast_last], p=1.0),
        A.ChannelShuffle(p=p),
    ], p=1.0)


class RandomZoomOut(A.Pad):
    """SSD's zoom-out: put the image at a random place on a canvas ``r`` times its height and
    width (``r`` uniform in ``side_range``) filled with ``fill``. Objects keep their pixel size,
    so after the final fixed-size resize they are ``r`` times smaller."""

    def __init__(self, side_range: tuple[float, float] = (1.0, 4.0), fill: float = 0, p: float = 0.5) -> None:
        if not 1.0 <= side_range[0] <= side_range[1]:
            raise ValueError(f"side_range {side_range}: needs 1 <= low <= high")
        super().__init__(padding=0, fill=fill, p=p)
        self.side_range = side_range

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(*self.side_range)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        left = int((canvas_w - width) * self.py_random.random())
        top = int((canvas_h - height) * self.py_random.random())
        return {"pad_top": top, "pad_bottom": canvas_h - height - top,
                "pad_left": left, "pad_right": canvas_w - width - left}


def _iou_with_region(boxes: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """IoU of each pixel xyxy box [N,4] with one xyxy region -> [N]."""
    x0, y0, x1, y1 = region
    inter_w = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    inter = inter_w * inter_h
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (x1 - x0) * (y1 - y0) - inter)


class RandomIoUCrop(BaseCrop):
    """SSD's min-IoU crop, as torchvision's ``RandomIoUCrop`` that RT-DETR uses.

    Draw a minimum IoU from ``min_ious`` (one of 1.0 or more keeps the whole image), then up to
    ``trials`` crops whose sides are ``min_scale``-``max_scale`` of the image's (each side drawn
    on its own) with width/height in [``min_aspect_ratio``, ``max_aspect_ratio``]. A crop is
    taken when at least one box has its centre strictly inside it and, among those, one box
    has IoU >= the minimum with it; otherwise the next minimum is drawn. Boxes whose centre is
    outside the crop are dropped, the others are clipped to it. An image without boxes is left
    whole; so is any image after ``max_draws`` minimums without a crop (torchvision draws
    forever, which never ends when ``min_ious`` lacks 1.0 and no crop can meet them).
    """

    def __init__(self, min_scale: float = 0.3, max_scale: float = 1.0, min_aspect_ratio: float = 0.5,
                 max_aspect_ratio: float = 2.0, min_ious: Sequence[float] = SSD_MIN_IOUS, trials: int = 40,
                 max_draws: int = 50, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.min_aspect_ratio = min_aspect_ratio
        self.max_aspect_ratio = max_aspect_ratio
        self.min_ious = tuple(min_ious)
        self.trials = trials
        self.max_draws = max_draws

    def _random_region(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """A random pixel xyxy region within the image, or None when its shape is not allowed."""
        new_w = int(width * self.py_random.uniform(self.min_scale, self.max_scale))
        new_h = int(height * self.py_random.uniform(self.min_scale, self.max_scale))
        if new_w == 0 or new_h == 0 or not self.min_aspect_ratio <= new_w / new_h <= self.max_aspect_ratio:
            return None
        left = int((width - new_w) * self.py_random.random())
        top = int((height - new_h) * self.py_random.random())
        return left, top, left + new_w, top + new_h

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        bboxes = data.get("bboxes")
        whole = {"crop_coords": (0, 0, width, height), "keep": np.ones(0 if bboxes is None else len(bboxes), bool)}
        if bboxes is None or not len(bboxes):
            return whole
        # albumentations hands boxes over normalised to [0, 1] (labels in further columns); back
        # in pixels they are off by float32 noise, rounded away so that a centre on the crop's
        # edge is on it (outside), as with torchvision's pixel boxes
        boxes = np.round(np.asarray(bboxes, dtype=np.float64)[:, :4] * [width, height, width, height], 3)
        centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        for _ in range(self.max_draws):
            min_iou = self.py_random.choice(self.min_ious)
            if min_iou >= 1.0:
                return whole
            for _ in range(self.trials):
                region = self._random_region(height, width)
                if region is None:
                    continue
                x0, y0, x1, y1 = region
                inside = (x0 < centre_x) & (centre_x < x1) & (y0 < centre_y) & (centre_y < y1)
                if inside.any() and _iou_with_region(boxes[inside], region).max() >= min_iou:
                    return {"crop_coords": region, "keep": inside}
        return whole

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], keep: np.ndarray,
                        **params: Any) -> np.ndarray:
        # dropping rows drops their labels too: albumentations carries label fields as columns
        return super().apply_to_bboxes(bboxes[keep], crop_coords, **params)


def _to_float(normalize: bool) -> A.BasicTransform:
    """uint8 -> float32 in [0, 1] (RT-DETR), or ImageNet-normalised for backbones that want it."""
    if normalize:
        return A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    return A.ToFloat(max_value=255.0)


def _bbox_params(min_box_size: float) -> A.BboxParams:
    # checked after every transform: boxes are clipped to the picture and those narrower or
    # lower than min_box_size pixels (at that point's size) are dropped with their labels
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True,
                        min_width=min_box_size, min_height=min_box_size)


def rtdetr_train_transforms(size: int = 640, stop_epoch: int | None = None, photometric_p: float = 0.5,
                            zoom_out_p: float = 0.5, zoom_out_range: tuple[float, float] = (1.0, 4.0),
                            iou_crop_p: float = 0.8, hflip: float = 0.5, min_box_size: float = 1.0,
                            normalize: bool = False, seed: int | None = None) -> Compose:
    """RT-DETR's training augmentation -> HWC float32 ``size`` x ``size`` images in [0, 1].

    The photometric distortion, zoom-out and IoU crop run while the epoch given to
    ``set_epoch`` is before ``stop_epoch`` (None: always). ``seed`` seeds albumentations.
    """
    strong = UntilEpoch([
        photometric_distort(photometric_p),
        RandomZoomOut(zoom_out_range, fill=0, p=zoom_out_p),
        RandomIoUCrop(p=iou_crop_p),
    ], stop_epoch)
    transforms = [strong, A.HorizontalFlip(p=hflip), A.Resize(size, size), _to_float(normalize)]
    return Compose(transforms, bbox_params=_bbox_params(min_box_size), seed=seed)


def rtdetr_val_transforms(size: int = 640, normalize: bool = False) -> Compose:
    """Resize to ``size`` x ``size`` (aspect ratio not kept) -> HWC float32 in [0, 1]; every box
    is kept, as RT-DETR's evaluation does not drop small ones."""
    return Compose([A.Resize(size, size), _to_float(normalize)], bbox_params=_bbox_params(0.0))


class MultiScaleBatchResize(StopsAtEpoch):
    """Resize a batch of same-size images [B,C,H,W] to [B,C,s,s], ``s`` drawn uniformly from the
    entries of ``scales`` (a repeated entry is drawn more often: RT-DETR lists 640 thrice),
    while the epoch (see :meth:`set_epoch`, 0 at first) is before ``stop_epoch`` (None:
    always); from then on the batch is returned as it is.

    For a collate function, after stacking: targets need no change, since their boxes are
    normalised (cx, cy, w, h). ``mode`` is ``F.interpolate``'s; RT-DETR uses its default,
    "nearest". With ``seed`` the scales come from an own generator; without, from Python's
    ``random``, which a DataLoader seeds differently in every worker and epoch (an own
    generator is copied into every worker in the same state, so workers repeat its draws).
    """

    def __init__(self, scales: Sequence[int] = RTDETR_SCALES, stop_epoch: int | None = None,
                 mode: str = "nearest", seed: int | None = None) -> None:
        if not scales:
            raise ValueError("scales: needs at least one size")
        self.scales = tuple(scales)
        self.stop_epoch = stop_epoch
        self.mode = mode
        self.rng = random.Random(seed) if seed is not None else None

    def draw_size(self) -> int:
        """The side length for the next batch, one draw from ``scales``."""
        return (self.rng or random).choice(self.scales)

    def __call__(self, images: Tensor) -> Tensor:
        if not self.active:
            return images
        size = self.draw_size()
        if images.shape[-2:] == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode=self.mode)
