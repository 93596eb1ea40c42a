"""albumentations pipelines for segmentation: image [H,W,C] + mask [H,W] -> tensors.

Masks are always resampled with nearest neighbour, and pixels that geometric transforms
bring in from outside the image get the ignore index (street) or background (medical).
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from densevit.data.compose import Compose


class SegTransform:
    """Callable ``(image [H,W,C], mask [H,W]) -> (image [C,H,W] float32, mask [H,W] int64)``."""

    def __init__(self, pipeline: Compose) -> None:
        self.pipeline = pipeline

    def set_random_seed(self, seed: int | None) -> None:
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipeline(image=image, mask=mask.astype(np.int32))
        image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))).float()
        return image_t, torch.from_numpy(np.ascontiguousarray(out["mask"])).long()


def medical_train(size: Sequence[int], rotate: float = 20.0, scale: tuple[float, float] = (0.85, 1.15)) -> SegTransform:
    """TransUNet-style slice augmentation: right-angle rotations, flips, small rotations and scaling, resize."""
    return SegTransform(
        Compose(
            [
                A.RandomRotate90(p=0.5),
                A.HorizontalFlip(p=0.5),
                A.Affine(rotate=(-rotate, rotate), scale=scale, interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=cv2.INTER_NEAREST, fill=0, fill_mask=0, p=0.5),
                A.Resize(*size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
            ]
        )
    )


def resize_only(size: Sequence[int]) -> SegTransform:
    """Resize image (bilinear) and mask (nearest) to ``size`` = (height, width)."""
    return SegTransform(
        Compose([A.Resize(*size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)])
    )


def street_train(crop: Sequence[int], ignore_index: int = 255, scale: tuple[float, float] = (0.5, 2.0)) -> SegTransform:
    """Random rescale, pad (mask: ignore), random crop, flip, colour jitter, ImageNet normalisation."""
    return SegTransform(
        Compose(
            [
                A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), interpolation=cv2.INTER_LINEAR,
                              mask_interpolation=cv2.INTER_NEAREST, p=1.0),
                A.PadIfNeeded(min_height=crop[0], min_width=crop[1], border_mode=cv2.BORDER_CONSTANT,
                              fill=0, fill_mask=ignore_index),
                A.RandomCrop(*crop),
                A.HorizontalFlip(p=0.5),
                A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0, p=0.5),
                A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
            ]
        )
    )


def street_eval() -> SegTransform:
    """ImageNet normalisation only (evaluation at full resolution)."""
    return SegTransform(Compose([A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)]))
