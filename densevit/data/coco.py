"""COCO-format detection data: a folder of images and an instances JSON (or a YOLO or Pascal VOC
split read into the same object: :func:`densevit.data.coco_json.read_instances`).

The file is read and checked when the dataset is opened, by :mod:`densevit.data.coco_json`
(the checks the COCO evaluator makes too) and here:

- the file as a whole (always an error): JSON that does not parse, a missing ``images``,
  ``annotations`` or ``categories`` list, image or category ids that are not unique integers,
  more categories than the model has classes, no image at all;
- each annotation: an ``image_id`` or ``category_id`` that the file does not list (or that is
  not among the model's classes), an ``id`` that is missing or repeated, a ``bbox`` that is not
  four finite numbers, a width or height that is not positive, a box with nothing left after
  clipping to its image, an ``iscrowd`` that is not 0 or 1;
- each image: ``file_name`` missing, ``height``/``width`` not positive integers, the file
  missing or empty (0 bytes).

Bad annotations and images are raised (``bad_annotations="raise"``, the default; ``"error"``
is its older name) as one ``UserInputError`` naming the file, the record
(``annotations[k] (annotation id N, image id M)`` or ``images[k] (image id M)``) and the field,
or dropped (``"drop"``) with one warning that counts them and shows the first few; an image
dropped takes its annotations with it. Problems met while reading a picture (unreadable,
truncated, a size other than the file says) are ``UserInputError`` naming the picture,
whatever the policy.

Category ids (any integers, with gaps) become contiguous class indices 0..K-1 in increasing id
order, or in the order of ``category_ids`` when given; :attr:`CocoDetection.category_ids` maps
them back. Crowd annotations are left out of training targets (evaluation reads them from the file).

A sample is ``(image [3,H,W] float32 normalised, target)`` with the target keys of the
detection contract: ``boxes`` [N,4] normalised (cx, cy, w, h), ``labels`` [N] int64,
``image_id`` (int64 scalar tensor), ``orig_size`` and ``size`` ((h, w) int64 tensors).
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import albumentations as A
import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from densevit.data.coco_json import (
    Instances,
    check_instances,
    counted,
    describe_annotation,
    is_int,
    read_json,
    report_bad_records,
)
from densevit.data.compose import Augmented
from densevit.data.det_transforms import apply
from densevit.data.images import read_rgb
from densevit.errors import UserInputError

# "error" is the older name of "raise" (configs and checkpoints written before 0.3 say it)
BadAnnotationPolicy = Literal["raise", "drop", "error"]
POLICIES = ("raise", "drop", "error")


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


def load_coco(annotation_file: str | Path | Instances) -> COCO:
    """Read and index a COCO instances file (or a split already read) for its images and categories.

    A file whose structure is broken (see :func:`densevit.data.coco_json.check_instances`) is
    a :class:`UserInputError`; bad annotations are left out of the index without a word
    (:class:`CocoDetection` reports them), and a file without ``annotations`` is indexed as
    one without any (an image list to predict on).
    """
    data, source = _read(annotation_file)
    if isinstance(data, dict):
        data = {"annotations": [], **data}  # a copy: the split may be shared with its dataset
    bad = {k for k, _ in check_instances(data, source, required=(), annotation_ids=True)}
    return index_coco({**data, "annotations": [a for k, a in enumerate(data["annotations"]) if k not in bad]})


class CocoDetection(Augmented, Dataset):
    """Images of ``image_dir`` with the boxes of ``annotation_file``, checked when opened (see
    the module docstring).

    Args:
        annotation_file: a COCO instances file, or a split already read
            (:class:`~densevit.data.coco_json.Instances`, whose ``source`` messages name).
        transform: a :class:`~densevit.data.compose.Compose` over pixel xyxy boxes (see
            :mod:`densevit.data.det_transforms`), ending with normalisation or scaling to [0, 1].
        bad_annotations: ``"raise"`` (or ``"error"``): the first bad annotation or image is a
            ``UserInputError``; ``"drop"``: they are left out with one warning.
        num_classes: the model's number of classes; more categories than that is an error.
        category_ids: the category id of each class index (the model's order, e.g.
            ``data.category_ids``); default: the file's category ids in increasing order.
            An annotation of a category not in it is a bad annotation.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path | Instances, transform: A.Compose,
                 bad_annotations: BadAnnotationPolicy = "raise", num_classes: int | None = None,
                 category_ids: Sequence[int] | None = None) -> None:
        if bad_annotations not in POLICIES:
            raise ValueError(f"bad_annotations: expected one of {POLICIES}, got {bad_annotations!r}")
        self.image_dir = Path(image_dir)
        data, source = _read(annotation_file)
        self.transform = transform
        self.policy = "drop" if bad_annotations == "drop" else "raise"
        bad_annotation_list = check_instances(data, source, required=("bbox",), annotation_ids=True)
        categories = data["categories"]
        if not data["images"]:
            raise UserInputError(f"{source}: 'images' is empty: no image to train or evaluate on")
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        self.category_ids: list[int] = list(category_ids) if category_ids is not None else sorted(names)
        self.class_names: list[str] = [names.get(i, f"category {i}") for i in self.category_ids]
        if num_classes is not None and len(self.category_ids) > num_classes:
            if category_ids is None:
                raise UserInputError(f"{source}: 'categories' lists {len(self.category_ids)} categories, "
                                     f"more than the model's {num_classes} classes (model.num_classes)")
            raise UserInputError(f"data.category_ids: {len(self.category_ids)} category ids, more than the "
                                 f"model's {num_classes} classes (model.num_classes)")

        bad_annotations_at = dict(bad_annotation_list)  # annotation index -> message
        bad_images: list[str] = []
        self.records = self._index(data, bad_annotations_at, bad_images)
        self.problems: list[str] = [message for _, message in sorted(bad_annotations_at.items())] + bad_images
        if self.problems and not self.records and self.policy == "drop":
            raise UserInputError(f"{source}: no usable image left after dropping "
                                 f"{counted(len(self.problems), 'bad record')}, the first: {self.problems[0]}")
        report_bad_records(self.problems, self.policy, source,
                           ((len(bad_annotations_at), "annotation"), (len(bad_images), "image")))
        kept = {record.image_id for record in self.records}
        self.coco = index_coco({
            **data,
            "images": [image for image in data["images"] if image["id"] in kept],
            "annotations": [ann for k, ann in enumerate(data["annotations"])
                            if k not in bad_annotations_at and ann["image_id"] in kept],
        })

    def _index(self, data: dict[str, Any], bad_annotations: dict[int, str], bad_images: list[str]) -> list[_Record]:
        """One record per usable image, sorted by image id; fills in the bad records found."""
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        by_image: dict[int, list[int]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            if k not in bad_annotations:
                by_image[ann["image_id"]].append(k)
        records = []
        for i, info in sorted(enumerate(data["images"]), key=lambda item: item[1]["id"]):
            image_id = info["id"]
            problem, path = self._image_problem(info)
            if problem:
                bad_images.append(f"images[{i}] (image id {image_id}): {problem}")
                continue
            height, width = info["height"], info["width"]
            boxes, labels = [], []
            for k in by_image.get(image_id, []):
                ann = data["annotations"][k]
                problem = self._annotation_problem(ann, height, width, label_of)
                if problem:
                    bad_annotations[k] = f"annotations[{k}]{describe_annotation(ann)}: {problem}"
                elif not ann.get("iscrowd", 0):
                    x, y, w, h = (float(v) for v in ann["bbox"])
                    boxes.append([max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))])
                    labels.append(label_of[ann["category_id"]])
            records.append(_Record(int(image_id), path, height, width,
                                   np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                   np.asarray(labels, dtype=np.int64)))
        return records

    def _image_problem(self, info: dict[str, Any]) -> tuple[str | None, Path]:
        """What is wrong with an image record and its file (a stat, the file is not read), or None."""
        file_name = info.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            return f"'file_name' must be a file name, got {file_name!r}", self.image_dir
        path = self.image_dir / file_name
        height, width = info.get("height"), info.get("width")
        if not (is_int(height) and is_int(width) and height > 0 and width > 0):
            return f"'height' and 'width' must be positive integers, got {height!r} and {width!r}", path
        try:
            size = path.stat().st_size
        except OSError:
            return f"'file_name': image file {path} not found", path
        if not path.is_file():
            return f"'file_name': {path} is not a file", path
        if size == 0:
            return f"'file_name': image file {path} is empty (0 bytes)", path
        return None, path

    @staticmethod
    def _annotation_problem(ann: dict[str, Any], height: int, width: int, label_of: dict[int, int]) -> str | None:
        """What is wrong with an annotation given its image (checked by the file's checks first)."""
        if ann["category_id"] not in label_of:
            return f"category_id {ann['category_id']} is not among the model's classes (data.category_ids)"
        if ann.get("iscrowd", 0):
            return None  # not a training target; its box is only scored against
        bbox = ann["bbox"]  # four finite numbers, width and height >= 0: checked with the file
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            return f"'bbox' {bbox} has a width or height that is not positive"
        if min(x + w, float(width)) <= max(x, 0.0) or min(y + h, float(height)) <= max(y, 0.0):
            return f"'bbox' {bbox} lies outside its {width}x{height} image (nothing left after clipping)"
        return None

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


def _read(annotations: str | Path | Instances) -> tuple[Any, str]:
    """(the parsed instances object, the file that messages name)."""
    if isinstance(annotations, Instances):
        return annotations.data, annotations.source
    return read_json(annotations), str(annotations)
