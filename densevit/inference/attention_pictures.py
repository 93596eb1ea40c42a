"""Pictures of attention: heat maps over the image, tiles of heads, sampling points as dots."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

# Colour stops from low to high weight (dark blue -> purple -> red -> orange -> pale yellow):
# light reads as "much attention" on dark and light photos alike, and the order survives greyscale.
_STOPS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=np.float64)
BOX_COLOUR = "#00ff66"
MARKER_COLOUR = "#00ffff"


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], any shape -> uint8 colours [..., 3] along the stops."""
    position = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_STOPS) - 2)
    frac = (position - low)[..., None]
    return np.round(_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).astype(np.uint8)


def normalised(heat: Tensor | np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] by its own minimum and maximum (a constant map becomes 0)."""
    heat = np.asarray(heat, dtype=np.float64)
    span = heat.max() - heat.min()
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def grey(image: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 in grey (still 3 channels): under a map, every colour then belongs to the map."""
    return np.repeat(np.round(image.mean(-1, keepdims=True)).astype(np.uint8), 3, axis=-1)


def heat_overlay(image: np.ndarray, heat: Tensor | np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``image`` [H,W,3] uint8 in grey with ``heat`` [h,w] (any scale) blended over it -> [H,W,3] uint8.

    The map is scaled to [0, 1] by its own range and resized bilinearly to the image: each
    grid cell covers the image region that its token sees.
    """
    grid = torch.as_tensor(normalised(heat))[None, None]
    resized = F.interpolate(grid, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.round(grey(image) * (1 - alpha) + colourise(resized) * alpha).astype(np.uint8)


def tile(pictures: Sequence[np.ndarray], labels: Sequence[str], columns: int = 4, max_side: int = 256) -> np.ndarray:
    """Same-size [H,W,3] pictures in a grid, each shrunk to ``max_side`` and captioned -> [H', W', 3]."""
    height, width = pictures[0].shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * size[0], rows * size[1]))
    for index, (picture, label) in enumerate(zip(pictures, labels)):
        cell = Image.fromarray(picture).resize(size, Image.BILINEAR)
        ImageDraw.Draw(cell).text((3, 2), label, fill="white", stroke_width=1, stroke_fill="black")
        sheet.paste(cell, ((index % columns) * size[0], (index // columns) * size[1]))
    return np.asarray(sheet)


def draw_box(picture: np.ndarray, box: Sequence[float], label: str) -> np.ndarray:
    """``picture`` [H,W,3] uint8 with one pixel box (x1, y1, x2, y2) and its label drawn."""
    canvas = torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1)
    width = max(1, round(max(picture.shape[:2]) / 250))
    drawn = draw_bounding_boxes(canvas, torch.tensor([list(box)], dtype=torch.float32), labels=[label],
                                colors=[BOX_COLOUR], width=width)
    return drawn.permute(1, 2, 0).numpy()


def draw_marker(picture: np.ndarray, x: float, y: float) -> np.ndarray:
    """A ring around pixel (``x``, ``y``): the token whose attention is shown."""
    canvas = Image.fromarray(picture)
    radius = max(3, round(max(picture.shape[:2]) / 60))
    ImageDraw.Draw(canvas).ellipse((x - radius, y - radius, x + radius, y + radius), outline=MARKER_COLOUR,
                                   width=max(1, radius // 3))
    return np.asarray(canvas)


def draw_points(picture: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sampling points [n, 2] (pixel x, y) as dots whose area and colour grow with ``weights`` [n].

    The picture is shown in grey; the heaviest points are drawn last, on top; sizes are relative
    to the heaviest point.
    """
    canvas = Image.fromarray(grey(picture))
    draw = ImageDraw.Draw(canvas)
    largest = max(3.0, max(picture.shape[:2]) / 40)
    relative = weights / max(float(weights.max()), 1e-12)
    colours = colourise(relative)
    for index in np.argsort(relative):
        x, y = points[index]
        radius = 1.5 + largest * float(np.sqrt(relative[index]))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(int(v) for v in colours[index]),
                     outline="black")
    return np.asarray(canvas)
