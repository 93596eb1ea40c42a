"""A COCO ground truth prepared for the evaluation, and the choice of evaluator (backend).

The file is checked once (:func:`densevit.data.coco_json.check_instances`: unique integer ids,
resolvable references, boxes, areas), then image, category and annotation ids are renumbered
1..N in increasing (file) order, which keeps every tie-break of the tools and avoids their
traps: ids beyond 2**31 or 2**63, and annotation id 0, which both tools read as "unmatched".

Backends: ``auto`` is densevit's own vectorised evaluator (:mod:`densevit.evaluation.coco_match`,
:mod:`~densevit.evaluation.coco_accumulate`: pycocotools' numbers, bit for bit, several times
faster than faster-coco-eval); ``pycocotools`` and ``faster_coco_eval`` run those tools.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densevit.data.coco_json import check_instances, gc_paused, read_json
from densevit.errors import UserInputError
from densevit.evaluation.coco_match import Objects

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``auto`` is densevit's own evaluator (returned as ``"densevit"``); the tools are checked."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "densevit"
    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        raise UserInputError("backend 'faster_coco_eval' needs the faster-coco-eval package "
                             "(pip install faster-coco-eval)")
    return backend


def silent(*_: Any, **__: Any) -> None:
    """A print function for faster-coco-eval that prints nothing."""


class GroundTruth:
    """A checked COCO ground truth with ids renumbered for the evaluation tools.

    Attributes:
        source: how messages name it (the file path).
        dataset: the renumbered COCO dict (images, annotations, categories) given to the tools.
        image_ids: the file's image id -> internal id (1..N, increasing with the file id).
        file_image_ids: internal id - 1 -> the file's image id.
        category_ids: the file's category id -> internal id (1..K, increasing).
        categories: ``(file category id, name)`` per internal id - 1.
        image_sizes: internal image id -> ``(height, width)`` (None where the file has none).
        sizes: int64 [images + 1, 2], the same as an array (row 0 and missing sizes: -1).
    """

    def __init__(self, gt: str | Path | Mapping | COCO, iou_types: Sequence[str]) -> None:
        with gc_paused():  # tens of thousands of dicts copied, none freed
            self._prepare(gt, iou_types)

    def _prepare(self, gt: str | Path | Mapping | COCO, iou_types: Sequence[str]) -> None:
        if isinstance(gt, (str, Path)):
            source, data = str(gt), read_json(gt)
        elif isinstance(gt, COCO):
            source, data = "ground truth", gt.dataset
        else:
            source, data = "ground truth", gt
        self.source = source
        required = ("area",) + (("bbox",) if "bbox" in iou_types else ()) + (
            ("segmentation",) if "segm" in iou_types else ())
        problems = check_instances(data, source, required=required, image_size="segm" in iou_types)
        if problems:
            raise UserInputError(f"{source}: {problems[0][1]}")
        image_order = sorted(img["id"] for img in data["images"])
        category_order = sorted(cat["id"] for cat in data["categories"])
        self.image_ids = {file_id: k + 1 for k, file_id in enumerate(image_order)}
        self.file_image_ids = image_order
        self.category_ids = {file_id: k + 1 for k, file_id in enumerate(category_order)}
        names = {cat["id"]: str(cat.get("name", cat["id"])) for cat in data["categories"]}
        self.categories = [(file_id, names[file_id]) for file_id in category_order]
        images = [{**img, "id": self.image_ids[img["id"]]} for img in data["images"]]
        self.image_sizes = {img["id"]: (img.get("height"), img.get("width")) for img in images}
        self.sizes = np.full((len(images) + 1, 2), -1, np.int64)
        for internal, (height, width) in self.image_sizes.items():
            if isinstance(height, int) and isinstance(width, int):
                self.sizes[internal] = height, width
        annotations = [
            {**ann, "id": k + 1, "image_id": self.image_ids[ann["image_id"]],
             "category_id": self.category_ids[ann["category_id"]], "iscrowd": int(ann.get("iscrowd", 0))}
            for k, ann in enumerate(data["annotations"])
        ]
        categories = [{**cat, "id": self.category_ids[cat["id"]]} for cat in data["categories"]]
        self.dataset = {"images": images, "annotations": annotations, "categories": categories}
        self._coco: dict[str, Any] = {}
        self._objects: dict[str, Objects] = {}

    def objects(self, iou_type: str) -> Objects:
        """The annotations as columns (file order) for the own evaluator; for ``segm`` with their
        masks as compressed RLEs, converted as pycocotools' ``COCO.annToRLE`` converts them."""
        if iou_type not in self._objects:
            anns = self.dataset["annotations"]
            image = np.fromiter((a["image_id"] for a in anns), np.int64, len(anns))
            masks = None
            if iou_type == "bbox":
                boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            else:
                boxes = np.zeros((len(anns), 4))
                masks = _masks(anns, self.image_sizes)
            self._objects[iou_type] = Objects(
                image=image, category=np.fromiter((a["category_id"] for a in anns), np.int64, len(anns)),
                boxes=boxes, area=np.array([a["area"] for a in anns], dtype=np.float64),
                masks=masks, crowd=np.array([a["iscrowd"] for a in anns], dtype=bool))
        return self._objects[iou_type]

    def coco(self, backend: str) -> Any:
        """The ground truth as the backend's COCO object (built once per backend)."""
        if backend not in self._coco:
            if backend == "pycocotools":
                gt = COCO()
                gt.dataset = self.dataset
                with contextlib.redirect_stdout(io.StringIO()):
                    gt.createIndex()
            else:
                import faster_coco_eval

                gt = faster_coco_eval.COCO(self.dataset, print_function=silent)
            self._coco[backend] = gt
        return self._coco[backend]


def _masks(anns: list[dict], image_sizes: Mapping[int, tuple[int, int]]) -> list[dict]:
    """pycocotools' ``COCO.annToRLE`` of every annotation; polygons are encoded in one call per
    image size (``frPyObjects`` encodes each polygon alone; ``merge`` joins an object's)."""
    masks: list[Any] = [None] * len(anns)
    batches: dict[tuple[int, int], list[int]] = {}
    for k, ann in enumerate(anns):
        segmentation, size = ann["segmentation"], image_sizes[ann["image_id"]]
        if isinstance(segmentation, list) and segmentation and isinstance(segmentation[0], list) \
                and len(segmentation[0]) > 4:  # what frPyObjects reads as polygons
            batches.setdefault(size, []).append(k)
        else:
            masks[k] = _to_rle(segmentation, *size)
    for (height, width), members in batches.items():
        rles = mask_utils.frPyObjects([p for k in members for p in anns[k]["segmentation"]], height, width)
        at = 0
        for k in members:
            n = len(anns[k]["segmentation"])
            masks[k] = rles[at] if n == 1 else mask_utils.merge(rles[at:at + n])
            at += n
    return masks


def _to_rle(segmentation: Any, height: int, width: int) -> dict:
    """pycocotools' ``COCO.annToRLE``: polygons and uncompressed RLEs encoded, compressed RLEs as they are."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation
