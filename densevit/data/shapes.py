"""A synthetic COCO-format detection set: coloured shapes on textured backgrounds.

Used by ``densevit demo detect`` and by tests. Every image holds a few non-overlapping
circles, squares and triangles of varied sizes and colours on a background of smooth noise
and stripes, so that the class is told by shape, not by colour.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from densevit.io import write_json_atomic

SHAPE_CLASSES = ("circle", "square", "triangle")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A muted random base colour with smooth blotches, faint stripes at a random angle and
    pixel noise, uint8 RGB."""
    base = rng.uniform(70, 190, size=3)
    cells = size // 16 + 1
    blotches = rng.normal(0, 18, size=(cells, cells, 3)) + base
    canvas = np.asarray(Image.fromarray(np.clip(blotches, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                        dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    canvas += stripes[..., None] * rng.uniform(5, 15)
    canvas += rng.normal(0, 5, size=canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _overlaps(box: tuple[float, float, float, float], boxes: list[tuple[float, float, float, float]]) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        if x < bx + bw + 2 and bx < x + w + 2 and y < by + bh + 2 and by < y + h + 2:
            return True
    return False


def _vivid_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour of random hue (one channel high, one low, one anywhere)."""
    channels = [int(rng.integers(200, 256)), int(rng.integers(0, 60)), int(rng.integers(0, 256))]
    order = rng.permutation(3)
    return tuple(channels[i] for i in order)  # type: ignore[return-value]


def _draw_shape(draw: ImageDraw.ImageDraw, label: int, x: float, y: float, s: float,
                colour: tuple[int, int, int]) -> tuple[float, float, float, float]:
    """Draw shape ``label`` in the square (x, y, s, s); return its tight pixel xywh box."""
    if SHAPE_CLASSES[label] == "circle":
        draw.ellipse([x, y, x + s, y + s], fill=colour)
        return x, y, s, s
    if SHAPE_CLASSES[label] == "square":
        draw.rectangle([x, y, x + s, y + s], fill=colour)
        return x, y, s, s
    draw.polygon([(x, y + s), (x + s, y + s), (x + s / 2, y)], fill=colour)
    return x, y, s, s


def _make_image(rng: np.random.Generator, size: int, max_objects: int, min_side: int,
                max_side: int) -> tuple[Image.Image, list[tuple[int, tuple[float, float, float, float]]]]:
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, tuple[float, float, float, float]]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = float(rng.integers(min_side, max_side + 1))
            x, y = (float(v) for v in rng.uniform(0, size - side - 1, size=2))
            if not _overlaps((x, y, side, side), [b for _, b in objects]):
                break
        else:
            continue
        label = int(rng.integers(len(SHAPE_CLASSES)))
        colour = _vivid_colour(rng)
        objects.append((label, _draw_shape(draw, label, x, y, side, colour)))
    return image.filter(ImageFilter.GaussianBlur(0.6)), objects


def generate_shapes(root: Path, splits: dict[str, int], image_size: int = 128, max_objects: int = 4,
                    min_side: int = 16, max_side: int = 48, seed: int = 0) -> dict[str, Path]:
    """Write ``root/images/<split>/*.png`` and ``root/<split>.json`` (COCO instances) per split.

    ``splits`` maps split names to image counts. Category ids start at 1, image ids are
    unique across splits. Returns the annotation file of each split.
    """
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]
    files = {}
    image_id = annotation_id = 0
    for split, count in splits.items():
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            image, objects = _make_image(rng, image_size, max_objects, min_side, max_side)
            file_name = f"{image_id:06d}.png"
            image.save(image_dir / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            for label, (x, y, w, h) in objects:
                annotation_id += 1
                annotations.append({"id": annotation_id, "image_id": image_id, "category_id": label + 1,
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        files[split] = root / f"{split}.json"
        write_json_atomic({"images": images, "annotations": annotations, "categories": categories}, files[split])
    return files
