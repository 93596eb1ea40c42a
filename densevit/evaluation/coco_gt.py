"""A COCO ground truth prepared for the evaluation tools, and the choice of tool (backend).

The file is checked once (:func:`densevit.data.coco_json.check_instances`: unique integer ids,
resolvable references, boxes, areas), then image, category and annotation ids are renumbered
1..N in increasing (file) order, which keeps every tie-break of the tools and avoids their
traps: ids beyond 2**31 or 2**63, and annotation id 0, which both tools read as "unmatched".
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from densevit.data.coco_json import check_instances, read_json
from densevit.errors import UserInputError

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``auto`` is faster-coco-eval when installed, else pycocotools."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"
    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        raise UserInputError("backend 'faster_coco_eval' needs the faster-coco-eval package "
                             "(pip install 'densevit[fast]')")
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
    """

    def __init__(self, gt: str | Path | Mapping | COCO, iou_types: Sequence[str]) -> None:
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
        annotations = [
            {**ann, "id": k + 1, "image_id": self.image_ids[ann["image_id"]],
             "category_id": self.category_ids[ann["category_id"]], "iscrowd": int(ann.get("iscrowd", 0))}
            for k, ann in enumerate(data["annotations"])
        ]
        categories = [{**cat, "id": self.category_ids[cat["id"]]} for cat in data["categories"]]
        self.dataset = {"images": images, "annotations": annotations, "categories": categories}
        self._coco: dict[str, Any] = {}

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
