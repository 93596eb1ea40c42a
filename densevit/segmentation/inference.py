"""Inference helpers: sliding windows over large images, slice-by-slice volumes, colour overlays."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import draw_segmentation_masks


def pad_to_multiple(x: Tensor, divisor: int, value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``x`` at the bottom/right up to multiples of ``divisor``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=value)
    return x


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


@torch.no_grad()
def sliding_window_logits(
    model: nn.Module, image: Tensor, window: Sequence[int], overlap: float = 0.5, batch_size: int = 4,
    size_divisor: int = 32,
) -> Tensor:
    """Average softmax scores of overlapping windows: image [C,H,W] -> probabilities [K,H,W].

    Windows of ``window`` = (h, w) are placed every ``(1 - overlap) * window`` pixels, the last
    one flush with the border; an image smaller than a window is padded, then cropped back.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    height, width = image.shape[-2:]
    win_h, win_w = (max(math.ceil(w / size_divisor) * size_divisor, size_divisor) for w in window)
    padded = F.pad(image, (0, max(win_w - width, 0), 0, max(win_h - height, 0)))
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
def predict_volume(model: nn.Module, image: Tensor, size: Sequence[int], batch_size: int = 16) -> Tensor:
    """Segment a volume slice by slice: image [C,X,Y,Z] -> labels [X,Y,Z] int64.

    Each slice is resized to the training ``size``, and the logits back to the slice's size
    before the arg-max (as the model was trained on resized slices).
    """
    slices = image.permute(3, 0, 1, 2)  # [Z, C, X, Y]
    labels = []
    for start in range(0, slices.shape[0], batch_size):
        batch = F.interpolate(slices[start : start + batch_size].float(), size=tuple(size), mode="bilinear", align_corners=False)
        logits = F.interpolate(model(batch).float(), size=image.shape[1:3], mode="bilinear", align_corners=False)
        labels.append(logits.argmax(dim=1))
    return torch.cat(labels).permute(1, 2, 0)


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.45) -> np.ndarray:
    """``image`` [H,W,3] uint8 with each class's colour blended over its pixels -> [H,W,3] uint8.

    A class whose palette entry is None is left uncoloured (background in medical pictures).
    """
    canvas = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    lab = torch.from_numpy(labels.astype(np.int64))
    classes = [c for c in range(len(palette)) if palette[c] is not None]
    masks = torch.stack([lab == c for c in classes]) if classes else torch.zeros(0, *lab.shape, dtype=torch.bool)
    colors = [tuple(int(v) for v in palette[c]) for c in classes]
    drawn = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=colors)
    return drawn.permute(1, 2, 0).numpy()


def to_uint8_grey(slice_2d: np.ndarray) -> np.ndarray:
    """A float slice [H,W] scaled to its 1st-99th percentile range as an RGB uint8 picture [H,W,3]."""
    low, high = np.percentile(slice_2d, [1, 99])
    scaled = np.clip((slice_2d - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)
