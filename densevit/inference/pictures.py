"""Pictures of predictions: class colours over an image with a legend, boxes with readable labels.

Colours belong to classes, not to pictures: class ``c`` is drawn in ``palette[c]`` in every box,
overlay and legend (the task's palette for segmentation, :func:`class_palette` for detection),
so a colour means the same class across images and runs. Text is sized from the picture (its
shorter side), in PIL's built-in TrueType font, on a filled tag in the class colour.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from densevit.data.label_maps import default_palette

# The folder, inside a prediction run's output, that holds the pictures (result files stay outside it).
PICTURES = "pictures"
# Small slices are enlarged to at least this side, to be seen.
MIN_PICTURE_SIDE = 256
# Pictures with boxes (and comparisons) are enlarged until their shorter side reaches this,
# before drawing: text drawn on a 128-pixel picture cannot be read.
MIN_DRAWN_SIDE = 512
# White space between the panels of a comparison, in pixels.
PANEL_GAP = 8
# Smallest text, in pixels: below this the built-in font is no longer legible.
MIN_FONT_SIZE = 12
Colour = tuple[int, int, int]


def class_palette(num_classes: int) -> list[Colour]:
    """The fixed colour of each class index (the scheme segmentation tasks use without an official palette)."""
    return default_palette(num_classes)


def font_size(picture_side: int) -> int:
    """Text height in pixels for a picture whose shorter side is ``picture_side`` (1/32 of it, at least 12)."""
    return max(MIN_FONT_SIZE, round(picture_side / 32))


def line_width(picture_side: int) -> int:
    """Box line width in pixels for a picture whose shorter side is ``picture_side``."""
    return max(2, round(picture_side / 256))


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in TrueType font at ``size`` pixels (no font file is shipped or looked for)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def text_colour(background: Sequence[int]) -> Colour:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = (int(v) for v in background[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def zoom_for(height: int, width: int, min_side: int) -> int:
    """The whole factor that brings the shorter side of a ``height`` x ``width`` picture to ``min_side``."""
    return max(1, math.ceil(min_side / max(1, min(height, width))))


def zoomed(array: np.ndarray, zoom: int) -> np.ndarray:
    """``array`` [H,W(,C)] with each pixel repeated ``zoom`` x ``zoom`` times (label maps stay exact)."""
    return array if zoom == 1 else array.repeat(zoom, axis=0).repeat(zoom, axis=1)


def overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int] | None], alpha: float = 0.45,
            class_names: Sequence[str] | None = None) -> np.ndarray:
    """``image`` [H,W,3] uint8 with each class's colour blended over its pixels -> [H,W,3] uint8.

    A class whose palette entry is None is left uncoloured (background in medical pictures).
    Given ``class_names``, a legend of the classes present is added below -> [H+h,W,3].
    """
    canvas = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    lab = torch.from_numpy(labels.astype(np.int64))
    classes = [c for c in range(len(palette)) if palette[c] is not None]
    masks = torch.stack([lab == c for c in classes]) if classes else torch.zeros(0, *lab.shape, dtype=torch.bool)
    colors = [tuple(int(v) for v in palette[c]) for c in classes]
    drawn = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=colors).permute(1, 2, 0).numpy()
    if class_names is None:
        return drawn
    return with_legend(drawn, classes_present(labels, palette), class_names, palette)


def classes_present(labels: np.ndarray, palette: Sequence[Sequence[int] | None]) -> list[int]:
    """The classes of ``labels`` (any shape) that the palette colours, in increasing order."""
    values = np.unique(labels)
    return [int(c) for c in values if 0 <= c < len(palette) and palette[int(c)] is not None]


def class_name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if index < len(class_names) else f"class {index}"


def legend(classes: Sequence[int], class_names: Sequence[str], palette: Sequence[Sequence[int] | None],
           width: int, size: int | None = None) -> np.ndarray:
    """A white strip [h, width, 3] uint8 listing ``classes``: a square swatch of each class's colour
    and its name, left to right, wrapping onto new rows; ``size``: text height (default from ``width``)."""
    size = size or font_size(width)
    face, gap = font(size), max(4, size // 2)
    entries = []  # (x, row) of each swatch
    x, row = gap, 0
    for c in classes:
        entry = size + gap // 2 + int(math.ceil(face.getlength(class_name(class_names, c))))
        if x > gap and x + entry > width - gap:
            x, row = gap, row + 1
        entries.append((x, row))
        x += entry + 2 * gap
    line = size + gap
    strip = Image.new("RGB", (width, gap + line * (row + 1)), "white")
    draw = ImageDraw.Draw(strip)
    for c, (x, r) in zip(classes, entries):
        top = gap + r * line
        draw.rectangle((x, top, x + size - 1, top + size - 1), fill=tuple(int(v) for v in palette[c]),
                       outline=(0, 0, 0))
        draw.text((x + size + gap // 2, top + size // 2), class_name(class_names, c), fill=(0, 0, 0), font=face,
                  anchor="lm")
    return np.asarray(strip)


def with_legend(picture: np.ndarray, classes: Sequence[int], class_names: Sequence[str],
                palette: Sequence[Sequence[int] | None]) -> np.ndarray:
    """``picture`` [H,W,3] with the :func:`legend` of ``classes`` below it -> [H+h,W,3]."""
    strip = legend(classes, class_names, palette, picture.shape[1], font_size(min(picture.shape[:2])))
    return np.concatenate([picture, strip], axis=0)


def to_uint8_grey(slice_2d: np.ndarray) -> np.ndarray:
    """A float slice [H,W] scaled to its 1st-99th percentile range as an RGB uint8 picture [H,W,3]."""
    low, high = np.percentile(slice_2d, [1, 99])
    scaled = np.clip((slice_2d - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tag(box: Sequence[float], tag_w: int, tag_h: int, width: int, height: int,
              taken: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Where a ``tag_w`` x ``tag_h`` label of pixel box (x1, y1, x2, y2) goes in a ``width`` x
    ``height`` picture: above the box, else inside its top (a box at the top edge), else below it,
    else inside its bottom; the first of these that overlaps no tag in ``taken`` (the first if all
    do), always kept inside the picture. Returns the tag's (x1, y1, x2, y2)."""
    x1, y1, _, y2 = (int(round(v)) for v in box)
    left = min(max(0, x1), max(0, width - tag_w))
    candidates = [y1 - tag_h, y1, y2, y2 - tag_h]
    spots = []
    for top in candidates:
        top = min(max(0, top), max(0, height - tag_h))
        spots.append((left, top, left + tag_w, top + tag_h))
    return next((spot for spot in spots if not any(_overlaps(spot, t) for t in taken)), spots[0])


def draw_detections(image: np.ndarray, detection: dict[str, Tensor], class_names: Sequence[str],
                    score_threshold: float = 0.0, palette: Sequence[Sequence[int]] | None = None,
                    min_side: int = MIN_DRAWN_SIDE) -> Image.Image:
    """The HWC uint8 ``image`` with the detections scoring at least ``score_threshold`` drawn.

    ``detection``: ``boxes`` [N,4] pixel xyxy, ``labels`` [N] class indices and ``scores`` [N]
    (without scores, e.g. ground truth, every box is drawn and labelled by name alone).
    Pictures whose shorter side is under ``min_side`` are enlarged by a whole factor first;
    boxes are drawn in ``palette[class]`` (default :func:`class_palette`), highest scores first,
    with their labels on filled tags that stay inside the picture and avoid each other.
    """
    scores = detection.get("scores")
    keep = scores >= score_threshold if scores is not None else torch.ones(len(detection["labels"]), dtype=torch.bool)
    order = torch.argsort(scores[keep], descending=True) if scores is not None else torch.arange(int(keep.sum()))
    zoom = zoom_for(*image.shape[:2], min_side)
    picture = np.asarray(Image.fromarray(image).resize((image.shape[1] * zoom, image.shape[0] * zoom),
                                                        Image.BILINEAR)) if zoom > 1 else image
    boxes = detection["boxes"][keep][order].detach().float().cpu() * zoom
    classes = detection["labels"][keep][order].tolist()
    texts = [class_name(class_names, c) for c in classes]
    if scores is not None:
        texts = [f"{t} {s:.2f}" for t, s in zip(texts, scores[keep][order].tolist())]
    if not len(boxes):
        return Image.fromarray(np.ascontiguousarray(picture))
    if palette is None:
        palette = class_palette(max(len(class_names), max(classes) + 1))
    colours = [tuple(int(v) for v in palette[c % len(palette)]) for c in classes]
    side = min(picture.shape[:2])
    canvas = torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1)
    # boxes drawn lowest score last would hide the best ones: reversed, so the best are on top
    drawn = draw_bounding_boxes(canvas, boxes.flip(0), colors=colours[::-1], width=line_width(side))
    result = Image.fromarray(drawn.permute(1, 2, 0).numpy())
    draw, face = ImageDraw.Draw(result), font(font_size(side))
    pad = max(2, font_size(side) // 6)
    taken: list[tuple[int, int, int, int]] = []
    for box, text, colour in zip(boxes.tolist(), texts, colours):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
        tag = place_tag(box, right - left + 2 * pad, bottom - top + 2 * pad, result.width, result.height, taken)
        taken.append(tag)
        draw.rectangle((tag[0], tag[1], tag[2] - 1, tag[3] - 1), fill=colour)
        draw.text((tag[0] + pad - left, tag[1] + pad - top), text, fill=text_colour(colour), font=face)
    return result


def titled(picture: np.ndarray, title: str, size: int) -> np.ndarray:
    """``picture`` [H,W,3] with ``title`` in a dark band above it -> [H+h,W,3]."""
    pad = max(3, size // 3)
    band = Image.new("RGB", (picture.shape[1], size + 2 * pad), (40, 40, 40))
    ImageDraw.Draw(band).text((pad, pad + size // 2), title, fill=(255, 255, 255), font=font(size), anchor="lm")
    return np.concatenate([np.asarray(band), picture], axis=0)


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], footer: np.ndarray | None = None,
                 gap: int = PANEL_GAP) -> np.ndarray:
    """Titled pictures [H_i,W_i,3] in a row on white, ``gap`` pixels apart, and ``footer`` [h,w,3]
    (a legend) under the row -> one [H',W',3] uint8 picture."""
    size = font_size(min(min(p.shape[:2]) for _, p in panels))
    shown = [titled(p, title, size) for title, p in panels]
    height = max(p.shape[0] for p in shown)
    width = sum(p.shape[1] for p in shown) + gap * (len(shown) - 1)
    rows = height + (footer.shape[0] if footer is not None else 0)
    sheet = np.full((rows, max(width, footer.shape[1] if footer is not None else 0), 3), 255, np.uint8)
    x = 0
    for p in shown:
        sheet[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    if footer is not None:
        sheet[height:, : footer.shape[1]] = footer
    return sheet


def generated_picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, structured [H,W,3] uint8 picture (blurred blotches), for checks when no real image is at hand."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
