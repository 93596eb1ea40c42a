"""How a segmentation model is run at inference: the one implementation that validation and
``densevit predict`` share, so that predicting then scoring gives exactly what ``evaluate`` gives.

* Images (:func:`segment_images`): each image at its own size, padded at the bottom and right
  to the model's stride (``whole``), or covered by overlapping windows whose softmax scores are
  averaged (``slide``); images of the same size go through the model together.
* Volumes (:func:`segment_volume`): slice by slice along the last axis, each slice resized to
  the training size and its logits resized back before the arg-max, as the model was trained.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevit.data.collate import pad_to, pad_to_multiple, round_up

InferenceMode = Literal["whole", "slide"]


@dataclass(frozen=True)
class ImageInference:
    """How images are run: ``mode``, the ``window`` (h, w) and ``overlap`` of ``slide``, images or
    windows per forward pass (``batch_size``) and the stride the model needs (``size_divisor``)."""

    mode: InferenceMode = "whole"
    window: tuple[int, int] = (512, 512)
    overlap: float = 0.5
    batch_size: int = 4
    size_divisor: int = 32

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


@torch.no_grad()
def sliding_window_probabilities(model: nn.Module, image: Tensor, window: Sequence[int], overlap: float = 0.5,
                                 batch_size: int = 4, size_divisor: int = 32) -> Tensor:
    """Average softmax scores of overlapping windows: image [C,H,W] -> probabilities [K,H,W].

    Windows of ``window`` = (h, w) (rounded up to ``size_divisor``) are placed every
    ``(1 - overlap) * window`` pixels, the last one flush with the border; an image smaller
    than a window is padded, then cropped back.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    height, width = image.shape[-2:]
    win_h, win_w = (max(round_up(w, size_divisor), size_divisor) for w in window)
    padded = pad_to(image, max(height, win_h), max(width, win_w))
    full_h, full_w = padded.shape[-2:]
    stride_h, stride_w = max(int(win_h * (1 - overlap)), 1), max(int(win_w * (1 - overlap)), 1)
    boxes = [(y, x) for y in _starts(full_h, win_h, stride_h) for x in _starts(full_w, win_w, stride_w)]
    scores: Tensor | None = None
    counts = torch.zeros(1, full_h, full_w, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        crops = torch.stack([padded[:, y : y + win_h, x : x + win_w] for y, x in chunk])
        probs = model(crops).float().softmax(dim=1)
        if scores is None:
            scores = torch.zeros(probs.shape[1], full_h, full_w, device=image.device)
        for (y, x), p in zip(chunk, probs):
            scores[:, y : y + win_h, x : x + win_w] += p
            counts[:, y : y + win_h, x : x + win_w] += 1
    return (scores / counts)[:, :height, :width]


@torch.no_grad()
def whole_image_logits(model: nn.Module, images: Tensor, size_divisor: int) -> Tensor:
    """Images [B,C,H,W] of one size, padded to the model's stride -> logits [B,K,H,W] (padding cropped)."""
    height, width = images.shape[-2:]
    return model(pad_to_multiple(images, size_divisor)).float()[..., :height, :width]


@torch.no_grad()
def segment_images(model: nn.Module, images: Sequence[Tensor], settings: ImageInference) -> list[Tensor]:
    """Label maps of normalised images [C,H_i,W_i] -> one [H_i,W_i] int64 map per image, in order."""
    labels: list[Tensor | None] = [None] * len(images)
    if settings.mode == "slide":
        for i, image in enumerate(images):
            probs = sliding_window_probabilities(model, image, settings.window, settings.overlap,
                                                 settings.batch_size, settings.size_divisor)
            labels[i] = probs.argmax(dim=0)
        return labels  # type: ignore[return-value]
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_size[tuple(image.shape[-2:])].append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), settings.batch_size):
            chunk = indices[start : start + settings.batch_size]
            logits = whole_image_logits(model, torch.stack([images[i] for i in chunk]), settings.size_divisor)
            for i, maps in zip(chunk, logits.argmax(dim=1)):
                labels[i] = maps
    return labels  # type: ignore[return-value]


@torch.no_grad()
def segment_volume(model: nn.Module, volume: Tensor, size: Sequence[int], batch_size: int = 16) -> Tensor:
    """Segment a volume slice by slice: volume [C,X,Y,Z] -> labels [X,Y,Z] int64.

    Each slice is resized (bilinear) to the training ``size``, and the logits back to the
    slice's size before the arg-max, ``batch_size`` slices per forward pass.
    """
    slices = volume.permute(3, 0, 1, 2)  # [Z, C, X, Y]
    labels = []
    for start in range(0, slices.shape[0], batch_size):
        batch = F.interpolate(slices[start : start + batch_size].float(), size=tuple(size), mode="bilinear",
                              align_corners=False)
        logits = F.interpolate(model(batch).float(), size=volume.shape[1:3], mode="bilinear", align_corners=False)
        labels.append(logits.argmax(dim=1))
    return torch.cat(labels).permute(1, 2, 0)
