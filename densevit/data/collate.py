"""Batching images of different sizes: pad to the largest and keep a padding mask."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor


class PaddedImages(tuple):
    """``(images [B,3,H,W], mask [B,H,W] bool, True at padding)``: a batch of images of different sizes.

    A tuple, so that code which moves nested tuples of tensors between devices keeps it whole.
    """

    def __new__(cls, items: Iterable[Tensor]) -> "PaddedImages":
        return super().__new__(cls, items)

    @property
    def images(self) -> Tensor:
        return self[0]

    @property
    def mask(self) -> Tensor:
        return self[1]


def pad_images(images: Sequence[Tensor], size_divisibility: int = 1) -> PaddedImages:
    """Pad [3,H_i,W_i] images at the bottom and right to a common size (rounded up to a multiple
    of ``size_divisibility``) -> ``PaddedImages`` with zeros in the padding and the mask True there."""
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    if size_divisibility > 1:
        height = -(-height // size_divisibility) * size_divisibility
        width = -(-width // size_divisibility) * size_divisibility
    first = images[0]
    batch = first.new_zeros((len(images), first.shape[0], height, width))
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=first.device)
    for i, img in enumerate(images):
        batch[i, :, : img.shape[-2], : img.shape[-1]] = img
        mask[i, : img.shape[-2], : img.shape[-1]] = False
    return PaddedImages((batch, mask))


def collate_detection(samples: Sequence[tuple[Tensor, dict[str, Any]]],
                      size_divisibility: int = 1) -> tuple[PaddedImages, list[dict[str, Any]]]:
    """``[(image [3,H_i,W_i], target), ...]`` -> ``(PaddedImages, [target, ...])``."""
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    return pad_images(images, size_divisibility), targets
