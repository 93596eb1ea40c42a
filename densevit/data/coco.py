"""COCO-format detection data: a folder of images and an instances JSON.

The file is read and checked by :mod:`densevit.data.coco_json` (the checks the COCO evaluator
makes too) and indexed with pycocotools. Category ids (any integers, with gaps) become
contiguous class indices 0..K-1 in increasing id order; :attr:`CocoDetection.category_ids`
maps them back. A bad annotation (unknown image or category, a box that is not four finite
numbers, a size that is not positive, entirely outside its image) or image (file missing) is
reported with the file and its id, then dropped with one counted warning or raised as an
error, by ``bad_annotations``.
Crowd annotations are left out of training targets (evaluation reads them from the file).

A sample is ``(image [3,H,W] float32 normalised, target)`` with the target keys of the
detection contract: ``boxes`` [N,4] normalised (cx, cy, w, h), ``labels`` [N] int64,
``image_id`` (int64 scalar tensor), ``orig_size`` and ``size`` ((h, w) int64 tensors).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import albumentations as A
import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from densevit.data.coco_json import check_instances, read_json
from densevit.data.compose import Augmented
from densevit.data.det_transforms import apply
from densevit.data.images import read_rgb
from densevit.errors import UserInputError

BadAnnotationPolicy = Literal["drop", "error"]


@dataclass(frozen=True)
class _Record:
    image_id: int
    path: Path
    height: int
    width: int
    boxes_xyxy: np.ndarray  # [N,4] float32 pixel, clipped to the image, crowd left out
    labels: np.ndarray  # [N] int64 contiguous


def index_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools index over an already checked instances object (quietly: it prints progress)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(annotation_file: str | Path) -> COCO:
    """Read and index a COCO instances file for its images and categories.

    A file whose structure is broken (see :func:`densevit.data.coco_json.check_instances`) is
    a :class:`UserInputError`; the annotations are not checked here (:class:`CocoDetection` does).
    """
    data = read_json(annotation_file)
    if isinstance(data, dict):
        data.setdefault("annotations", [])
    check_instances(data, str(annotation_file), required=())
    return index_coco(data)


class CocoDetection(Augmented, Dataset):
    """Images of ``image_dir`` with the boxes of ``annotation_file``.

    Args:
        transform: a :class:`~densevit.data.compose.Compose` over pixel xyxy boxes (see
            :mod:`densevit.data.det_transforms`), ending with normalisation or scaling to [0, 1].
        bad_annotations: ``"drop"`` (warn once with the count and the first few) or ``"error"``.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, transform: A.Compose,
                 bad_annotations: BadAnnotationPolicy = "drop") -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.transform = transform
        data = read_json(self.annotation_file)
        if isinstance(data, dict):
            data.setdefault("annotations", [])
        bad_records = check_instances(data, str(self.annotation_file), required=("bbox",))
        if bad_records and bad_annotations == "error":
            raise UserInputError(f"{self.annotation_file}: {bad_records[0][1]}")
        dropped = {k for k, _ in bad_records}
        data = {**data, "annotations": [a for k, a in enumerate(data["annotations"]) if k not in dropped]}
        self.coco = index_coco(data)
        categories = self.coco.dataset["categories"]
        self.category_ids: list[int] = sorted(int(c["id"]) for c in categories)
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        self.class_names: list[str] = [names[i] for i in self.category_ids]
        self.records, problems = self._index(bad_annotations)
        self.problems = problems = [message for _, message in bad_records] + problems
        if problems and bad_annotations == "drop":
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            warnings.warn(f"{self.annotation_file}: dropped {len(problems)} bad annotations or images: {shown}",
                          stacklevel=2)

    def _index(self, policy: BadAnnotationPolicy) -> tuple[list[_Record], list[str]]:
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        problems: list[str] = []

        def bad(message: str) -> None:
            if policy == "error":
                raise UserInputError(f"{self.annotation_file}: {message}")
            problems.append(message)

        records = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            path = self.image_dir / str(info.get("file_name", ""))
            if not path.is_file():
                bad(f"image id {image_id}: file {path} not found")
                continue
            try:
                height, width = int(info["height"]), int(info["width"])
            except (KeyError, TypeError, ValueError):
                bad(f"image id {image_id}: needs integer 'height' and 'width'")
                continue
            boxes, labels = [], []
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("iscrowd", 0):
                    continue
                box = self._checked_box(ann, height, width, bad)
                if box is not None:
                    boxes.append(box)
                    labels.append(label_of[ann["category_id"]])
            records.append(_Record(int(image_id), path, height, width,
                                   np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                   np.asarray(labels, dtype=np.int64)))
        return records, problems

    @staticmethod
    def _checked_box(ann: dict[str, Any], height: int, width: int, bad: Callable[[str], None]) -> list[float] | None:
        """The annotation's box as pixel xyxy clipped to the image, or None (reported) if it has
        no area or lies outside its image."""
        where = f"annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        bbox = ann["bbox"]  # four finite numbers: checked when the file was read
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            bad(f"{where}: bbox {bbox} has a width or height that is not positive")
            return None
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if x2 <= x1 or y2 <= y1:
            bad(f"{where}: bbox {bbox} lies outside its {width}x{height} image")
            return None
        return [x1, y1, x2, y2]

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        """The image as HWC uint8 RGB, oriented as its annotations (EXIF rotation applied when needed)."""
        record = self.records[index]
        return read_rgb(record.path, expected_hw=(record.height, record.width))

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        self.seed_sample(index)
        record = self.records[index]
        image, boxes, labels = apply(self.transform, self.load_image(index), record.boxes_xyxy, record.labels)
        height, width = image.shape[:2]
        boxes_t = box_convert(torch.from_numpy(boxes), "xyxy", "cxcywh")
        boxes_t = boxes_t / torch.tensor([width, height, width, height], dtype=torch.float32)
        target = {
            "boxes": boxes_t,
            "labels": torch.from_numpy(labels),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "orig_size": torch.tensor([record.height, record.width], dtype=torch.int64),
            "size": torch.tensor([height, width], dtype=torch.int64),
        }
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target
