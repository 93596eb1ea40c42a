"""Detection inference on image files: COCO results JSON and pictures with the boxes drawn."""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import box_convert
from torchvision.utils import draw_bounding_boxes

from densevit.data import IMAGE_SUFFIXES
from densevit.data.coco import read_rgb
from densevit.data.collate import pad_images
from densevit.data.det_transforms import apply
from densevit.errors import UserInputError
from densevit.io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from densevit.detection.task import DetectionTask

# One colour per class (cycled), distinguishable on photos: a box's colour tells its class at a glance.
CLASS_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#ffe119", "#469990")

def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Image files, with folders replaced by the images inside them (sorted)."""
    files: list[Path] = []
    for path in inputs:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise UserInputError(f"{path}: no such image file or folder")
    if not files:
        raise UserInputError(f"no images found in {', '.join(str(p) for p in inputs)}")
    return files


def known_image_ids(task: "DetectionTask") -> dict[str, int]:
    """File name -> image id, from the config's annotation files when they are at hand."""
    from densevit.data.coco import load_coco

    ids: dict[str, int] = {}
    for path in (task.cfg.data.val_annotations, task.cfg.data.train_annotations):
        if path and Path(path).is_file():
            for image in load_coco(path).dataset["images"]:
                ids.setdefault(str(image.get("file_name")), int(image["id"]))
    return ids


def draw_detections(image: np.ndarray, detection: dict[str, Tensor], class_names: list[str],
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


def predict_images(task: "DetectionTask", model: nn.Module, inputs: list[Path], out_dir: Path,
                   options: Namespace) -> dict[str, Any]:
    """Detect objects in every image; write ``results.json`` (COCO results, real category ids),
    ``image_ids.json`` (file -> image id used there) and ``images/<name>.png``."""
    files = expand_inputs(inputs)
    threshold = getattr(options, "score_threshold", None)
    score_threshold = 0.5 if threshold is None else float(threshold)
    batch_size = max(1, int(getattr(options, "batch_size", None) or 1))
    category_ids, class_names = task.categories
    ids = known_image_ids(task)
    transforms = task.eval_transforms()
    postprocess = task.build_postprocessor()
    device = next(model.parameters()).device
    picture_dir = Path(out_dir) / "images"
    picture_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    image_ids: dict[str, int] = {}
    model.eval()
    for start in range(0, len(files), batch_size):
        chunk = files[start: start + batch_size]
        originals = [read_rgb(path) for path in chunk]
        tensors, targets = [], []
        for path, image in zip(chunk, originals):
            normalised, _, _ = apply(transforms, image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            tensors.append(torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))))
            targets.append({"orig_size": torch.tensor(image.shape[:2])})
            image_ids[str(path)] = ids.get(path.name, len(image_ids) + 1)
        batch = pad_images(tensors, task.cfg.data.size_divisibility)
        with torch.no_grad():
            outputs = model(type(batch)(t.to(device) for t in batch))
        for path, image, detection in zip(chunk, originals, postprocess(outputs, targets)):
            xywh = box_convert(detection["boxes"].cpu(), "xyxy", "xywh").tolist()
            for box, score, label in zip(xywh, detection["scores"].tolist(), detection["labels"].tolist()):
                results.append({"image_id": image_ids[str(path)], "category_id": category_ids[label],
                                "bbox": [round(v, 2) for v in box], "score": round(score, 5)})
            picture = draw_detections(image, detection, class_names, score_threshold)
            with atomic_path(picture_dir / f"{path.stem}.png") as tmp:
                picture.save(tmp, format="PNG")
    write_json_atomic(results, Path(out_dir) / "results.json", indent=None)
    write_json_atomic(image_ids, Path(out_dir) / "image_ids.json")
    return {"images": len(files), "detections": len(results)}
