"""Detection predictions: COCO results JSON with the files' real ids, and pictures with the boxes drawn.

Writes ``results.json`` (every detection, as COCO scoring needs: ``image_id``, ``category_id``,
``bbox`` [x, y, w, h] in pixels, ``score``), ``image_ids.json`` (file -> the image id used there:
the annotation file's id when the config's annotations name the file, else a running number)
and ``pictures/<name>.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from densevit.data import IMAGE_SUFFIXES
from densevit.data.collate import PaddedImages, pad_images
from densevit.data.det_transforms import apply
from densevit.data.images import read_rgb
from densevit.detection.task import DetectionTask
from densevit.engine.task import move_to_device
from densevit.inference.export import EXPORTERS, ExportSpec
from densevit.inference.inputs import expand_inputs
from densevit.inference.pictures import PICTURES, draw_detections, generated_picture
from densevit.inference.predictor import RUNNERS, Predictor
from densevit.inference.writers import write_coco_results, write_picture
from densevit.io import write_json_atomic

DEFAULT_BATCH = 4


def known_image_ids(task: DetectionTask) -> dict[str, int]:
    """File name -> image id, from the config's annotation files when they are at hand."""
    from densevit.data.coco import load_coco

    ids: dict[str, int] = {}
    for path in (task.cfg.data.val_annotations, task.cfg.data.train_annotations):
        if path and Path(path).is_file():
            for image in load_coco(path).dataset["images"]:
                ids.setdefault(str(image.get("file_name")), int(image["id"]))
    return ids


@RUNNERS.register("detection")
def predict_detection(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Detect objects in every image of ``inputs``; see the module docstring for the files."""
    task: DetectionTask = predictor.task  # type: ignore[assignment]
    options = predictor.options
    files = expand_inputs(inputs, IMAGE_SUFFIXES)
    batch_size = options.batch_size or DEFAULT_BATCH
    category_ids, class_names = task.categories
    ids = known_image_ids(task)
    transforms = task.eval_transforms()
    postprocess = task.build_postprocessor()
    results: list[dict[str, Any]] = []
    image_ids: dict[str, int] = {}
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        originals = [read_rgb(path) for path in chunk]
        tensors, targets = [], []
        for path, image in zip(chunk, originals):
            normalised, _, _ = apply(transforms, image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            tensors.append(torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))))
            targets.append({"orig_size": torch.tensor(image.shape[:2])})
            image_ids[str(path)] = ids.get(path.name, len(image_ids) + 1)
        batch = move_to_device(pad_images(tensors, task.cfg.data.size_divisor), predictor.device)
        with predictor.running():
            detections = postprocess(predictor.model(batch), targets)
        for path, image, detection in zip(chunk, originals, detections):
            xywh = box_convert(detection["boxes"].float().cpu(), "xyxy", "xywh").tolist()
            for box, score, label in zip(xywh, detection["scores"].tolist(), detection["labels"].tolist()):
                # full precision: rounded scores would tie and reorder, and scores of the file
                # would then differ from what densevit evaluate computes on the same images
                results.append({"image_id": image_ids[str(path)], "category_id": category_ids[label],
                                "bbox": box, "score": score})
            if options.pictures:
                picture = draw_detections(image, detection, class_names, options.score_threshold)
                write_picture(picture, out_dir / PICTURES / f"{path.stem}.png")
    write_coco_results(results, out_dir / "results.json")
    write_json_atomic(image_ids, out_dir / "image_ids.json")
    return {"images": len(files), "detections": len(results), "results": str(out_dir / "results.json")}


class DetectionGraph(nn.Module):
    """The detector with plain tensors in and out, for export: (images [B,3,H,W], mask [B,H,W]
    bool, True at padding) -> (logits [B,Q,K(+1)], boxes [B,Q,4] normalised cxcywh)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.model(PaddedImages((images, mask)))
        return outputs["pred_logits"], outputs["pred_boxes"]


def _example_picture(task: DetectionTask, sample: Path | None) -> np.ndarray:
    """The sample, else the first validation image of the config, else a generated picture."""
    if sample is not None:
        return read_rgb(sample)
    data = task.cfg.data
    if data.val_annotations and Path(data.val_annotations).is_file():
        from densevit.data.coco import load_coco

        for image in load_coco(data.val_annotations).dataset["images"]:
            path = Path(data.val_images or data.train_images) / str(image.get("file_name"))
            if path.is_file():
                return read_rgb(path)
    return generated_picture(max(data.val_size, 64), max(data.val_size, 64) * 4 // 3)


@EXPORTERS.register("detection")
def detection_export(task: DetectionTask, model: nn.Module, sample: Path | None) -> ExportSpec:
    """A batch of two images of different sizes (padding and mask included), and one of another size."""
    divisor = max([task.cfg.data.size_divisor, *getattr(getattr(model, "backbone", None), "strides", [1])])
    normalised, _, _ = apply(task.eval_transforms(), _example_picture(task, sample), np.zeros((0, 4), np.float32),
                             np.zeros(0, np.int64))
    image = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))
    height, width = image.shape[-2:]
    smaller = image[:, : max(divisor, height * 3 // 4), : max(divisor, width * 2 // 3)]
    inputs = tuple(pad_images([image, smaller], divisor))
    other = tuple(pad_images([image[:, : max(divisor, height - 2 * divisor), : max(divisor, width - divisor)]], divisor))
    if task.cfg.loss.classification == "sigmoid":
        def scores(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"scores": 1 / (1 + np.exp(-out["logits"].astype(np.float64)))}
    else:
        def scores(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            logits = out["logits"].astype(np.float64)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            return {"scores": (e / e.sum(-1, keepdims=True))[..., :-1]}
    return ExportSpec(DetectionGraph(model).eval(), inputs, other, ["images", "mask"], ["logits", "boxes"],
                      derived=scores, metadata={"size_divisor": divisor})
