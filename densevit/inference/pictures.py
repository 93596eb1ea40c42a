"""Pictures of predictions: class colours over an image, boxes with names and scores."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

# One colour per class (cycled), distinguishable on photos: a box's colour tells its class at a glance.
CLASS_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#ffe119", "#469990")
# The folder, inside a prediction run's output, that holds the pictures (result files stay outside it).
PICTURES = "pictures"
# Small slices are enlarged to at least this side, to be seen.
MIN_PICTURE_SIDE = 256


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int] | None], alpha: float = 0.45) -> np.ndarray:
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


def enlarge(picture: np.ndarray, min_side: int = MIN_PICTURE_SIDE) -> np.ndarray:
    """``picture`` [H,W,3] repeated by a whole factor so that its longer side reaches ``min_side``."""
    zoom = max(1, min_side // max(picture.shape[:2]))
    return picture.repeat(zoom, axis=0).repeat(zoom, axis=1)


def draw_detections(image: np.ndarray, detection: dict[str, Tensor], class_names: Sequence[str],
                    score_threshold: float) -> Image.Image:
    """The HWC uint8 ``image`` with the detections scoring at least ``score_threshold`` drawn."""
    keep = detection["scores"] >= score_threshold
    boxes = detection["boxes"][keep].cpu()
    classes = detection["labels"][keep].tolist()
    labels = [f"{class_names[c]} {s:.2f}" for c, s in zip(classes, detection["scores"][keep].tolist())]
    if not len(boxes):
        return Image.fromarray(image)
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    width = max(1, round(max(image.shape[:2]) / 300))
    colours = [CLASS_COLOURS[c % len(CLASS_COLOURS)] for c in classes]
    drawn = draw_bounding_boxes(canvas, boxes, labels=labels, colors=colours, width=width)
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


def generated_picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, structured [H,W,3] uint8 picture (blurred blotches), for checks when no real image is at hand."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
