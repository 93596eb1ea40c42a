"""COCO box and mask AP with exactly the numbers of pycocotools' ``COCOeval``.

The evaluation itself is done by pycocotools or by faster-coco-eval (a C++ port that gives
the same numbers, several times faster); this module feeds them and guards against the
inputs on which they silently go wrong or crash:

- an annotation with id 0 is never counted as matched by either tool (0 is their "unmatched"
  marker), so annotation ids are renumbered 1..N internally, in file order;
- image and category ids are renumbered 1..N in increasing order (ids beyond 2**31 or 2**63
  then cannot overflow anything; the order, and so every tie-break, is unchanged);
- no detections at all gives AP 0 (``loadRes([])`` crashes in pycocotools);
- detections for an image id absent from the ground truth, unknown categories, boxes with a
  negative size and masks of the wrong size are errors that name the culprit.

The ground truth is checked and renumbered by :class:`~densevit.evaluation.coco_gt.GroundTruth`;
detections come in through ``process`` (a detector's tensors) or ``add_results`` (a results
file's records), and both are checked as whole arrays on one intake path.

Results are reported under the file's own ids and category names.
"""
from __future__ import annotations

import contextlib
import gc
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevit.data.coco_json import is_int as _is_int
from densevit.data.coco_json import is_number, xywh_problem
from densevit.distributed import all_gather_objects
from densevit.errors import UserInputError
from densevit.evaluation.coco_gt import BACKENDS, GroundTruth, resolve_backend, silent

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
__all__ = ["BACKENDS", "COCOEvaluator", "GroundTruth", "IOU_TYPES", "STAT_NAMES", "format_table", "scalar_metrics"]


@dataclass
class ImageDetections:
    """The detections of one image, in the tools' conventions.

    boxes: float64 [N, 4] pixel ``[x, y, width, height]``; scores: float64 [N];
    category_ids: int64 [N] internal category ids; masks: N compressed RLEs, or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    masks: list[dict] | None = None


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class COCOEvaluator:
    """COCO AP/AR of detections (boxes, optionally masks) against a COCO ground truth.

    Args:
        gt: the ground truth: a path to an ``instances.json``, its parsed dict, or a
            ``pycocotools.coco.COCO``.
        iou_types: any of ``"bbox"`` and ``"segm"``.
        backend: ``"pycocotools"``, ``"faster_coco_eval"`` (same numbers, faster) or ``"auto"``
            (faster-coco-eval when installed).
        label_to_category_id: how the ``labels`` given to ``process`` map to the file's category
            ids: a sequence (index = contiguous label) or a mapping. ``None`` means the labels
            already are the file's category ids.

    Typical use with a detector's postprocessed outputs::

        evaluator = COCOEvaluator("instances_val.json", label_to_category_id=dataset.category_ids)
        for images, targets in loader:
            results = postprocess(model(images), orig_sizes)   # per image: scores, labels, boxes
            evaluator.process(results, targets)                # image ids from targets
        metrics = evaluator.compute()
        metrics["bbox"]["AP"], metrics["bbox"]["per_class"]

    Every process of a distributed run calls ``process`` on its share and ``compute`` (which
    gathers the detections; every process gets the same result). An image seen again is
    ignored, so samplers that pad their last batch by repeating images do not count twice.
    """

    def __init__(
        self,
        gt: str | Path | Mapping | COCO | GroundTruth,
        iou_types: Sequence[str] = ("bbox",),
        backend: str = "auto",
        label_to_category_id: Sequence[int] | Mapping[int, int] | None = None,
    ) -> None:
        iou_types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
        self.iou_types = iou_types
        self.backend = resolve_backend(backend)
        self.gt = gt if isinstance(gt, GroundTruth) else GroundTruth(gt, iou_types)
        self._label_lut: dict[int, int] | None = None
        if label_to_category_id is not None:
            pairs = (label_to_category_id.items() if isinstance(label_to_category_id, Mapping)
                     else enumerate(label_to_category_id))
            self._label_lut = {}
            for label, category_id in pairs:
                if category_id not in self.gt.category_ids:
                    raise ValueError(f"label_to_category_id maps label {label} to category id "
                                     f"{category_id}, which is not in the ground truth categories")
                self._label_lut[int(label)] = self.gt.category_ids[category_id]
        self.reset()

    def reset(self) -> None:
        """Forget every detection processed so far."""
        self._images: dict[int, ImageDetections] = {}

    # ------------------------------------------------------------------ input
    # Two ways in (a detector's tensors, or a results file's records), one way to store: both
    # end in _intake, which checks the arrays as a whole and keeps one ImageDetections per image.

    def process(self, predictions: Sequence[Mapping] | Mapping[Any, Mapping],
                targets: Sequence[Mapping] | None = None) -> None:
        """Add the detections of a batch of images.

        Args:
            predictions: per image a dict with ``boxes`` (Tensor/ndarray [N, 4], pixel xyxy in
                the original image), ``scores`` [N], ``labels`` [N] (category ids, or contiguous
                labels mapped by ``label_to_category_id``), optionally ``masks`` (N RLE dicts, or
                a binary Tensor/ndarray [N, H, W] or [N, 1, H, W] at the original image size)
                and ``image_id``. Either a list of such dicts or a dict ``image_id -> dict``.
            targets: the batch's targets, used for the image ids where the predictions have
                none (``targets[i]["image_id"]``, an int or a one-element tensor).
        """
        if isinstance(predictions, Mapping):
            pairs = list(predictions.items())
        else:
            pairs = []
            for k, prediction in enumerate(predictions):
                image_id = prediction.get("image_id")
                if image_id is None:
                    if targets is None:
                        raise ValueError(f"prediction {k} has no 'image_id' and no targets were given")
                    image_id = targets[k]["image_id"]
                pairs.append((image_id, prediction))
        for image_id, prediction in pairs:
            image = self._internal_image_id(image_id, "predictions")
            where = f"image {self.gt.file_image_ids[image - 1]}"
            for key in ("boxes", "scores", "labels"):
                if key not in prediction:
                    raise ValueError(f"{where}: prediction has no '{key}'")
            xyxy = _numpy(prediction["boxes"], np.float64).reshape(-1, 4)
            scores = _numpy(prediction["scores"], np.float64).reshape(-1)
            labels = _numpy(prediction["labels"], None).reshape(-1)
            if not np.issubdtype(labels.dtype, np.integer):
                if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
                    raise ValueError(f"{where}: labels must be integers")
                labels = labels.astype(np.int64)
            if not (len(xyxy) == len(scores) == len(labels)):
                raise ValueError(f"{where}: {len(xyxy)} boxes, {len(scores)} scores and {len(labels)} "
                                 "labels; expected one of each per detection")
            masks = None
            if "segm" in self.iou_types:
                if "masks" not in prediction:
                    raise ValueError(f"{where}: mask evaluation needs 'masks' in every prediction")
                masks = self._masks_to_rles(prediction["masks"], image, len(xyxy), where)
            xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            self._intake(image, xywh, scores, self._categories_of(labels, where), masks,
                         lambda k: f"{where}: box {k} {xyxy[k].tolist()} (pixel x1, y1, x2, y2)")

    def add_results(self, results: Any, source: str = "results") -> None:
        """Add detections in the COCO results format (as written by detectors to a JSON file).

        Args:
            results: a list of ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}``
                (and ``"segmentation"``, an RLE or polygons, for mask evaluation), the file's ids.
            source: how error messages name the results (the file path).
        """
        if not isinstance(results, list):
            raise UserInputError(f"{source}: expected a list of detections, got {type(results).__name__}")
        keys = ("image_id", "category_id", "score") + tuple(
            "bbox" if t == "bbox" else "segmentation" for t in self.iou_types)
        columns = _columns(results, keys, source)
        images = self._mapped(columns["image_id"], self.gt.image_ids, source, "image_id",
                              f"is not in the ground truth {self.gt.source}")
        categories = self._mapped(columns["category_id"], self.gt.category_ids, source, "category_id",
                                  "is not in the ground truth categories")
        scores = _number_column(columns["score"], source, "score")
        if "bbox" in self.iou_types:
            xywh = _number_column(columns["bbox"], source, "bbox")
        else:
            xywh = np.zeros((len(results), 4))
        masks = ([self._to_rle(seg, image, f"{source}: [{k}]") for k, (seg, image) in
                  enumerate(zip(columns["segmentation"], images.tolist()))] if "segm" in self.iou_types else None)
        order = np.argsort(images, kind="stable")
        starts = np.flatnonzero(np.diff(images[order], prepend=-1))
        for rows in np.split(order, starts[1:]):
            if rows.size:
                self._intake(int(images[rows[0]]), xywh[rows], scores[rows], categories[rows],
                             [masks[k] for k in rows] if masks is not None else None,
                             lambda k, rows=rows: f"{source}: [{rows[k]}]: 'bbox' {xywh[rows[k]].tolist()}")

    def _intake(self, image: int, xywh: np.ndarray, scores: np.ndarray, categories: np.ndarray,
                masks: list[dict] | None, describe: Any) -> None:
        """Check one image's detections as arrays and keep them (an image seen again is ignored)."""
        if image in self._images:
            return
        bad = ~(np.isfinite(xywh).all(axis=1) & np.isfinite(scores))
        if bad.any():
            raise UserInputError(f"{describe(int(np.argmax(bad)))}: boxes and scores must be finite")
        negative = (xywh[:, 2:] < 0).any(axis=1)
        if negative.any():
            raise UserInputError(f"{describe(int(np.argmax(negative)))}: has a negative width or height")
        self._images[image] = ImageDetections(xywh, scores, categories, masks)

    def _mapped(self, values: list[Any], table: Mapping[int, int], source: str, key: str, missing: str) -> np.ndarray:
        """File ids -> internal ids as an int64 array; the first value that is no integer or not in
        ``table`` is an error naming its record."""
        mapped = [table.get(v) if type(v) is int else None for v in values]  # noqa: E721 - bools are not ids
        if None in mapped:
            k = mapped.index(None)
            value = values[k]
            if not _is_int(value):
                raise UserInputError(f"{source}: [{k}]: {key} must be an integer, got {value!r}")
            raise UserInputError(f"{source}: [{k}]: {key} {value} {missing}")
        return np.asarray(mapped, dtype=np.int64)

    def _internal_image_id(self, image_id: Any, where: str) -> int:
        if isinstance(image_id, torch.Tensor):
            image_id = image_id.item()
        if not _is_int(image_id):
            raise UserInputError(f"{where}: image_id must be an integer, got {image_id!r}")
        internal = self.gt.image_ids.get(int(image_id))
        if internal is None:
            raise UserInputError(f"{where}: image_id {image_id} is not in the ground truth "
                                 f"{self.gt.source}")
        return internal

    def _categories_of(self, labels: np.ndarray, where: str) -> np.ndarray:
        lut = self._label_lut if self._label_lut is not None else self.gt.category_ids
        unique, inverse = np.unique(labels, return_inverse=True)
        try:
            return np.array([lut[int(label)] for label in unique], dtype=np.int64)[inverse].reshape(-1)
        except KeyError as err:
            what = "label" if self._label_lut is not None else "category id"
            raise UserInputError(f"{where}: {what} {err.args[0]} has no category in the ground truth"
                                 + ("" if self._label_lut is not None else
                                    " (give label_to_category_id for contiguous labels)")) from None

    def _masks_to_rles(self, masks: Any, image: int, count: int, where: str) -> list[dict]:
        if isinstance(masks, (torch.Tensor, np.ndarray)):
            array = _numpy(masks, None)
            if array.ndim == 4 and array.shape[1] == 1:
                array = array[:, 0]
            height, width = self.gt.image_sizes[image]
            if array.ndim != 3 or array.shape[1:] != (height, width):
                raise UserInputError(f"{where}: masks of shape {tuple(array.shape)}, expected "
                                     f"[N, {height}, {width}] (the original image size)")
            if array.dtype != bool and not np.isin(array, (0, 1)).all():
                raise UserInputError(f"{where}: masks must be binary (bool or 0/1)")
            rles = mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
        else:
            rles = [self._to_rle(m, image, f"{where}: mask {k}") for k, m in enumerate(masks)]
        if len(rles) != count:
            raise ValueError(f"{where}: {len(rles)} masks for {count} detections")
        return list(rles)

    def _to_rle(self, segmentation: Any, image: int, where: str) -> dict:
        """A compressed RLE of ``segmentation`` (RLE or polygons), checked against the image size."""
        height, width = self.gt.image_sizes[image]
        if isinstance(segmentation, Mapping):
            size = segmentation.get("size")
            if "counts" not in segmentation or size is None:
                raise UserInputError(f"{where}: an RLE 'segmentation' needs 'size' and 'counts'")
            if list(size) != [height, width]:
                raise UserInputError(f"{where}: mask size {list(size)} does not match the image size "
                                     f"[{height}, {width}]")
            if isinstance(segmentation["counts"], list):
                return mask_utils.frPyObjects(dict(segmentation), height, width)
            return dict(segmentation)
        if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
            return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        raise UserInputError(f"{where}: 'segmentation' must be an RLE or a list of polygons")

    # ---------------------------------------------------------------- compute
    def compute(self) -> dict[str, dict[str, Any]]:
        """Evaluate everything processed (gathered from all processes).

        Returns:
            per iou type (``"bbox"``, ``"segm"``) a dict with the 12 COCO stats by name
            (``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``; -1 where
            pycocotools gives -1, e.g. no ground truth in an area range) and ``per_class``: a
            list, in category id order, of ``{"category_id", "name", "AP", "AP50", "AP75"}``
            (area all, 100 detections; -1 for a category without ground truth).
            ``scalar_metrics`` flattens it to ``{"bbox/AP": ...}`` for logs.
        """
        images: dict[int, ImageDetections] = {}
        for part in all_gather_objects(self._images):
            for image, detections in part.items():
                images.setdefault(image, detections)
        with _gc_paused():
            return {iou_type: self._evaluate(images, iou_type) for iou_type in self.iou_types}

    def _evaluate(self, images: Mapping[int, ImageDetections], iou_type: str) -> dict[str, Any]:
        gt = self.gt.coco(self.backend)
        dataset = {"images": self.gt.dataset["images"], "categories": self.gt.dataset["categories"],
                   "annotations": _annotations(images, iou_type)}
        if self.backend == "pycocotools":
            dt = COCO()
            dt.dataset = dataset
            with contextlib.redirect_stdout(io.StringIO()):
                dt.createIndex()
                evaluator = COCOeval(gt, dt, iou_type)
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
        else:
            import faster_coco_eval

            dt = faster_coco_eval.COCO(dataset, print_function=silent)
            evaluator = faster_coco_eval.COCOeval_faster(gt, dt, iou_type, print_function=silent)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats[:12])}
        return {**stats, "per_class": self._per_class(evaluator.eval["precision"])}

    def _per_class(self, precision: np.ndarray) -> list[dict[str, Any]]:
        """Per category AP from COCOeval's precision [T iou, R recall, K class, A area, M maxdets]."""
        rows = []
        for k, (category_id, name) in enumerate(self.gt.categories):
            row: dict[str, Any] = {"category_id": category_id, "name": name}
            for key, p in (("AP", precision[:, :, k, 0, -1]), ("AP50", precision[0, :, k, 0, -1]),
                           ("AP75", precision[5, :, k, 0, -1])):
                valid = p[p > -1]
                row[key] = float(np.mean(valid)) if valid.size else -1.0
            rows.append(row)
        return rows


def _columns(results: list[Any], keys: Sequence[str], source: str) -> dict[str, list[Any]]:
    """One list per key over all records; the first record that is no object or lacks a key is an error."""
    try:
        return {key: [record[key] for record in results] for key in keys}
    except (KeyError, TypeError, IndexError):
        for k, record in enumerate(results):
            if not isinstance(record, Mapping):
                raise UserInputError(f"{source}: [{k}]: expected an object, got {type(record).__name__}") from None
            for key in keys:
                if key not in record:
                    raise UserInputError(f"{source}: [{k}]: missing key '{key}'") from None
        raise


def _number_column(values: list[Any], source: str, key: str) -> np.ndarray:
    """Scores (one number each) or boxes (four each) as a float64 array; the first value that is
    not made of finite numbers is an error naming its record."""
    width = 4 if key == "bbox" else None
    if not values:
        return np.zeros((0, width) if width else (0,))
    try:
        array = np.asarray(values, dtype=np.float64)
        fits = array.shape == ((len(values), width) if width else (len(values),))
        ok = fits and bool(np.isfinite(array).all()) and not any(type(v) is bool for v in values)  # noqa: E721
    except (TypeError, ValueError):
        ok = False
    if ok:
        return array
    for k, value in enumerate(values):
        problem = xywh_problem(value) if width else (None if is_number(value) else "not a finite number")
        if problem:
            raise UserInputError(f"{source}: [{k}]: {problem if width else f'{key!r} must be a finite number, got {value!r}'}")
    raise UserInputError(f"{source}: {key!r} values must be finite numbers")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the evaluation builds a dict per detection (hundreds
    of thousands), each batch of which would trigger a collection that finds nothing to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _annotations(images: Mapping[int, ImageDetections], iou_type: str) -> list[dict[str, Any]]:
    """The detections as COCO result annotations, as ``COCO.loadRes`` would make them.

    Masks are scored with the mask area (not the box area that ``loadRes`` takes when a result
    has both), so small/medium/large mean the same for masks as for the ground truth.
    """
    annotations: list[dict[str, Any]] = []
    for image in sorted(images):
        det = images[image]
        common = zip(det.scores.tolist(), det.category_ids.tolist())
        if iou_type == "bbox":
            areas = (det.boxes[:, 2] * det.boxes[:, 3]).tolist()
            for box, area, (score, category) in zip(det.boxes.tolist(), areas, common):
                annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": category,
                                    "bbox": box, "area": area, "score": score, "iscrowd": 0})
        else:
            if not det.masks:
                continue
            areas = mask_utils.area(det.masks).tolist()
            boxes = mask_utils.toBbox(det.masks).tolist()
            for rle, area, box, (score, category) in zip(det.masks, areas, boxes, common):
                annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": category,
                                    "segmentation": rle, "area": area, "bbox": box, "score": score,
                                    "iscrowd": 0})
    return annotations


def scalar_metrics(result: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``compute()``'s stats as flat ``{"bbox/AP": value, ...}`` (per-class tables left out)."""
    return {f"{iou_type}/{name}": stats[name] for iou_type, stats in result.items() for name in STAT_NAMES}


def format_table(result: Mapping[str, Mapping[str, Any]], per_class: bool = False) -> str:
    """``compute()``'s result as readable text: the 12 stats per iou type, then per-class AP."""
    lines = []
    for iou_type, stats in result.items():
        lines.append(f"{iou_type}:")
        lines += [f"  {name:<6} {stats[name]!r}" for name in STAT_NAMES]
        if per_class:
            lines.append(f"  {'category_id':>11}  {'name':<24} {'AP':>7} {'AP50':>7} {'AP75':>7}")
            for row in stats["per_class"]:
                values = " ".join("no gt".rjust(7) if row[k] < 0 else f"{100 * row[k]:7.2f}"
                                  for k in ("AP", "AP50", "AP75"))
                lines.append(f"  {row['category_id']:>11}  {row['name'][:24]:<24} {values}")
    return "\n".join(lines)
