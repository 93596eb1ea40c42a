"""Detection predictions: COCO results JSON with the files' real ids, and pictures with the boxes drawn.

Writes ``results.json`` (every detection, as COCO scoring needs: ``image_id``, ``category_id``,
``bbox`` [x, y, w, h] in pixels, ``score``), ``image_ids.json`` (file -> the image id used there:
the annotation file's id when the config's annotations name the file, else a running number)
and ``pictures/<name>.png``. Videos: :class:`VideoDetections` (``<name>.json``, one ``image_id``
per frame, and the annotated ``<name>.mp4``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
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
from densevit.inference.video import VIDEO_RUNNERS, Frame
from densevit.inference.writers import write_coco_results, write_picture
from densevit.io import write_json_atomic

DEFAULT_BATCH = 4


def known_image_ids(task: DetectionTask) -> dict[str, int]:
    """File name -> image id, from the config's annotations (any ``data.format``) when they are at hand."""
    from densevit.data.coco import load_coco

    ids: dict[str, int] = {}
    for split in ("val", "train"):
        instances = task.split_instances(split, present_only=True)
        if instances is not None:
            for image in load_coco(instances).dataset["images"]:
                ids.setdefault(Path(str(image.get("file_name"))).name, int(image["id"]))
    return ids


class Detector:
    """The step that pictures and video frames share: RGB pictures in, detections, COCO result
    rows and drawings out, with the checkpoint's transforms, postprocessing and categories."""

    def __init__(self, predictor: Predictor) -> None:
        task: DetectionTask = predictor.task  # type: ignore[assignment]
        self.predictor = predictor
        self.batch_size = predictor.options.batch_size or DEFAULT_BATCH
        self.category_ids, self.class_names = task.categories
        self.size_divisor = task.cfg.data.size_divisor
        self.transforms = task.eval_transforms()
        self.postprocess = task.build_postprocessor()

    def __call__(self, pictures: Sequence[np.ndarray]) -> list[dict[str, Tensor]]:
        """Pictures [H,W,3] uint8 (sizes may differ) -> per picture ``scores`` [N], ``labels`` [N]
        (contiguous class indices) and ``boxes`` [N,4] (xyxy pixels of that picture)."""
        tensors, targets = [], []
        for image in pictures:
            normalised, _, _ = apply(self.transforms, image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            tensors.append(torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))))
            targets.append({"orig_size": torch.tensor(image.shape[:2])})
        batch = move_to_device(pad_images(tensors, self.size_divisor), self.predictor.device)
        with self.predictor.running():
            return self.postprocess(self.predictor.model(batch), targets)

    def coco_results(self, detection: dict[str, Tensor], image_id: int) -> list[dict[str, Any]]:
        """One picture's detections as COCO result rows (``bbox`` [x, y, w, h] pixels)."""
        xywh = box_convert(detection["boxes"].float().cpu(), "xyxy", "xywh").tolist()
        # full precision: rounded scores would tie and reorder, and scores of the file
        # would then differ from what densevit evaluate computes on the same images
        return [{"image_id": image_id, "category_id": self.category_ids[label], "bbox": box, "score": score}
                for box, score, label in zip(xywh, detection["scores"].tolist(), detection["labels"].tolist())]

    def drawn(self, image: np.ndarray, detection: dict[str, Tensor]) -> Image.Image:
        """``image`` with the detections scoring at least the options' threshold drawn."""
        return draw_detections(image, detection, self.class_names, self.predictor.options.score_threshold)


@RUNNERS.register("detection")
def predict_detection(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Detect objects in every image of ``inputs``; see the module docstring for the files."""
    files = expand_inputs(inputs, IMAGE_SUFFIXES)
    detector = Detector(predictor)
    ids = known_image_ids(predictor.task)  # type: ignore[arg-type]
    results: list[dict[str, Any]] = []
    image_ids: dict[str, int] = {}
    for start in range(0, len(files), detector.batch_size):
        chunk = files[start : start + detector.batch_size]
        originals = [read_rgb(path) for path in chunk]
        for path, image, detection in zip(chunk, originals, detector(originals)):
            image_ids[str(path)] = ids.get(path.name, len(image_ids) + 1)
            results.extend(detector.coco_results(detection, image_ids[str(path)]))
            if predictor.options.pictures:
                write_picture(detector.drawn(image, detection), out_dir / PICTURES / f"{path.stem}.png")
    write_coco_results(results, out_dir / "results.json")
    write_json_atomic(image_ids, out_dir / "image_ids.json")
    return {"images": len(files), "detections": len(results), "results": str(out_dir / "results.json")}


@VIDEO_RUNNERS.register("detection")
class VideoDetections:
    """Detection on a video (:mod:`densevit.inference.video`): ``NAME.json`` holds the COCO results
    of every predicted frame, ``image_id`` = frame index + 1."""

    def __init__(self, predictor: Predictor, frames_dir: Path) -> None:
        self.detector = Detector(predictor)
        self.batch_size = self.detector.batch_size
        self.results: list[dict[str, Any]] = []

    def predict(self, frames: list[Frame]) -> list[np.ndarray]:
        detections = self.detector([frame.rgb for frame in frames])
        for frame, detection in zip(frames, detections):
            self.results.extend(self.detector.coco_results(detection, frame.image_id))
        if not self.detector.predictor.options.pictures:
            return []
        return [np.asarray(self.detector.drawn(frame.rgb, detection)) for frame, detection in zip(frames, detections)]

    def finish(self, out_dir: Path, name: str) -> dict[str, Any]:
        path = write_coco_results(self.results, out_dir / f"{name}.json")
        return {"detections": len(self.results), "video_results": [str(path)]}


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
    instances = task.split_instances("val", present_only=True)
    if instances is not None:
        from densevit.data.coco import load_coco

        for image in load_coco(instances).dataset["images"]:
            path = instances.image_dir / str(image.get("file_name"))
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
