"""Batching samples: images of different sizes padded to a common one, masks with the ignore index.

Every padding in densevit goes through :func:`pad_to` (bottom and right, so pixel coordinates
and the top-left origin never move).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from densevit.errors import UserInputError


def round_up(value: int, divisor: int) -> int:
    """The smallest multiple of ``divisor`` that is at least ``value``."""
    return -(-value // divisor) * divisor if divisor > 1 else value


def pad_to(x: Tensor, height: int, width: int, value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``x`` at the bottom and right to ``height`` x ``width``."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h), value=value) if pad_h or pad_w else x


def pad_to_multiple(x: Tensor, divisor: int, value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``x`` at the bottom and right up to multiples of ``divisor``."""
    return pad_to(x, round_up(x.shape[-2], divisor), round_up(x.shape[-1], divisor), value)


def common_size(tensors: Sequence[Tensor], divisor: int = 1) -> tuple[int, int]:
    """The largest height and width among ``tensors``, rounded up to multiples of ``divisor``."""
    return (round_up(max(t.shape[-2] for t in tensors), divisor), round_up(max(t.shape[-1] for t in tensors), divisor))


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


def pad_images(images: Sequence[Tensor], size_divisor: int = 1) -> PaddedImages:
    """Pad [3,H_i,W_i] images to a common size (rounded up to a multiple of ``size_divisor``)
    -> ``PaddedImages`` with zeros in the padding and the mask True there."""
    height, width = common_size(images, size_divisor)
    batch = torch.stack([pad_to(img, height, width) for img in images])
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for i, img in enumerate(images):
        mask[i, : img.shape[-2], : img.shape[-1]] = False
    return PaddedImages((batch, mask))


def collate_detection(samples: Sequence[tuple[Tensor, dict[str, Any]]],
                      size_divisor: int = 1) -> tuple[PaddedImages, list[dict[str, Any]]]:
    """``[(image [3,H_i,W_i], target), ...]`` -> ``(PaddedImages, [target, ...])``."""
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    return pad_images(images, size_divisor), targets


def collate_segmentation(samples: Sequence[dict[str, Any]], size_divisor: int = 1,
                         ignore_index: int = 255) -> tuple[Tensor, dict[str, Any]]:
    """``[{"image": [C,H_i,W_i], "mask": [H_i,W_i]}, ...]`` -> ``(images [B,C,H,W], targets)``.

    Images are padded with zeros and masks with ``ignore_index`` to a common size divisible by
    ``size_divisor``; ``targets`` holds ``masks`` [B,H,W] and ``sizes`` (each image's own
    (height, width), so that inference can give every image back its own size), plus ``paths``
    when the samples name their files.
    """
    height, width = common_size([s["image"] for s in samples], size_divisor)
    images = torch.stack([pad_to(s["image"], height, width) for s in samples])
    masks = torch.stack([pad_to(s["mask"], height, width, ignore_index) for s in samples])
    targets: dict[str, Any] = {"masks": masks, "sizes": [tuple(s["image"].shape[-2:]) for s in samples]}
    if all("path" in s for s in samples):
        targets["paths"] = [s["path"] for s in samples]
    return images, targets


def collate_cases(samples: Sequence[dict[str, Any]]) -> tuple[list[Tensor], dict[str, Any]]:
    """Whole cases ``{"case_id", "image" [C,X,Y,Z], "label" [X,Y,Z], "spacing"}`` ->
    ``([image, ...], {"cases": [{"case_id", "label", "spacing"}, ...]})`` (volumes differ in size)."""
    unlabelled = [s["case_id"] for s in samples if s["label"] is None]
    if unlabelled:
        raise UserInputError(f"validation case {unlabelled[0]} has no label file")
    images = [s["image"] for s in samples]
    cases = [{"case_id": s["case_id"], "label": s["label"], "spacing": s["spacing"]} for s in samples]
    return images, {"cases": cases}
