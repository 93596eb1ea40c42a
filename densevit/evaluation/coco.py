"""COCO box and mask AP with exactly the numbers of pycocotools' ``COCOeval``.

The evaluation is densevit's own, vectorised (:mod:`~densevit.evaluation.coco_match`,
:mod:`~densevit.evaluation.coco_accumulate`: pycocotools' numbers bit for bit), or, by choice,
pycocotools or faster-coco-eval themselves (:mod:`~densevit.evaluation.coco_tools`). Whichever
runs, this module guards against the inputs on which the tools silently go wrong or crash:

- an annotation with id 0 is never counted as matched by either tool (0 is their "unmatched"
  marker), so annotation ids are renumbered 1..N internally, in file order;
- image and category ids are renumbered 1..N in increasing order (ids beyond 2**31 or 2**63
  then cannot overflow anything; the order, and so every tie-break, is unchanged);
- no detections at all gives AP 0 (``loadRes([])`` crashes in pycocotools);
- detections for an image id absent from the ground truth, unknown categories, boxes with a
  negative size and masks of the wrong size are errors that name the culprit.

The ground truth is checked and renumbered by :class:`~densevit.evaluation.coco_gt.GroundTruth`;
detections come in through ``process`` (a detector's tensors or arrays) or ``add_results`` (a
results file's records, checked column by column in :mod:`~densevit.evaluation.coco_results`).
Mask detections are scored with their mask area (not the box area that ``loadRes`` takes when
a result has both), so small/medium/large mean the same for masks as for the ground truth.

:func:`score_files` scores a results file against an instances file (``densevit score coco``).

PyTorch is imported by none of this: tensors are read through ``.numpy()`` when given, and the
detections of a distributed run are gathered only where ``torch.distributed`` is in use.

Results are reported under the file's own ids and category names.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densevit.data.coco_json import gc_paused, is_int
from densevit.errors import UserInputError
from densevit.evaluation.coco_accumulate import accumulate, summarize
from densevit.evaluation.coco_gt import BACKENDS, GroundTruth, resolve_backend
from densevit.evaluation.coco_match import Objects, match
from densevit.evaluation.coco_results import (
    Detections,
    check_boxes,
    from_results,
    mask_area,
    read_results,
    to_rle,
)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
__all__ = ["BACKENDS", "COCOEvaluator", "GroundTruth", "IOU_TYPES", "STAT_NAMES", "format_table", "scalar_metrics",
           "score_files"]


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    """An array of ``value`` (a tensor on any device, an array, a list)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _distributed() -> bool:
    torch = sys.modules.get("torch")  # never imported here: a run without torch is not distributed
    dist = getattr(torch, "distributed", None)
    return bool(dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


class COCOEvaluator:
    """COCO AP/AR of detections (boxes, optionally masks) against a COCO ground truth.

    Args:
        gt: the ground truth: a path to an ``instances.json``, its parsed dict, or a
            ``pycocotools.coco.COCO``.
        iou_types: any of ``"bbox"`` and ``"segm"``.
        backend: ``"auto"`` (densevit's own evaluator), ``"pycocotools"`` or ``"faster_coco_eval"``:
            the same numbers.
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
        self._parts: list[Detections] = []
        self._seen: set[int] = set()

    # ------------------------------------------------------------------ input
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
            check_boxes(xywh, scores, lambda k: f"{where}: box {k} {xyxy[k].tolist()} (pixel x1, y1, x2, y2)")
            self._keep(Detections(np.full(len(xywh), image, np.int64), self._categories_of(labels, where),
                                  xywh, scores, masks))

    def add_results(self, results: Any, source: str = "results") -> None:
        """Add detections in the COCO results format (as written by detectors to a JSON file).

        Args:
            results: a list of ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}``
                (and ``"segmentation"``, an RLE or polygons, for mask evaluation), the file's ids.
            source: how error messages name the results (the file path).
        """
        with gc_paused():
            self._keep(from_results(results, self.iou_types, self.gt.image_ids, self.gt.category_ids,
                                    self.gt.sizes, source, self.gt.source))

    def add_results_file(self, path: str | Path) -> None:
        """Add the detections of a COCO results JSON file (as :meth:`add_results`, read faster:
        :func:`~densevit.evaluation.coco_results.read_results`)."""
        with gc_paused():
            self._keep(read_results(path, self.iou_types, self.gt.image_ids, self.gt.category_ids,
                                    self.gt.sizes, self.gt.source))

    def _keep(self, detections: Detections) -> None:
        """Keep ``detections``, less those of images seen before."""
        images = np.unique(detections.image).tolist()
        repeated = [image for image in images if image in self._seen]  # the batch's few images, not all seen
        if repeated:
            detections = detections.take(~np.isin(detections.image, repeated))
        self._seen.update(images)
        self._parts.append(detections)

    def _internal_image_id(self, image_id: Any, where: str) -> int:
        if hasattr(image_id, "item"):  # a one-element tensor or array
            image_id = image_id.item()
        if not is_int(image_id):
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
        height, width = self.gt.image_sizes[image]
        if hasattr(masks, "shape"):  # a tensor or an array
            array = _numpy(masks, None)
            if array.ndim == 4 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 3 or array.shape[1:] != (height, width):
                raise UserInputError(f"{where}: masks of shape {tuple(array.shape)}, expected "
                                     f"[N, {height}, {width}] (the original image size)")
            if array.dtype != bool and not np.isin(array, (0, 1)).all():
                raise UserInputError(f"{where}: masks must be binary (bool or 0/1)")
            rles = mask_utils.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
        else:
            rles = [to_rle(m, height, width, f"{where}: mask {k}") for k, m in enumerate(masks)]
        if len(rles) != count:
            raise ValueError(f"{where}: {len(rles)} masks for {count} detections")
        return list(rles)

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
        with gc_paused():
            detections = self._gathered()
            return {iou_type: self._evaluate(detections, iou_type) for iou_type in self.iou_types}

    def _gathered(self) -> Detections:
        """All processes' detections; an image that several hold counts once (the lowest rank's)."""
        parts = self._parts
        if _distributed():
            from densevit.distributed import all_gather_objects

            parts = [part for rank_parts in all_gather_objects(parts) for part in rank_parts]
        detections = Detections.concatenate(parts, "segm" in self.iou_types)
        part = np.repeat(np.arange(len(parts)), [len(p.image) for p in parts])
        images, first = np.unique(detections.image, return_index=True)
        owner = np.zeros(images[-1] + 1 if images.size else 1, np.int64)
        owner[images] = part[first]
        mine = part == owner[detections.image]
        return detections if mine.all() else detections.take(mine)

    def _evaluate(self, detections: Detections, iou_type: str) -> dict[str, Any]:
        if self.backend == "densevit":
            precision, recall = evaluate_arrays(self.gt, detections, iou_type)
            stats = summarize(precision, recall)
        else:
            from densevit.evaluation.coco_tools import evaluate_with_tool

            stats, precision = evaluate_with_tool(self.backend, self.gt, detections, iou_type)
        return {**{name: float(value) for name, value in zip(STAT_NAMES, stats)},
                "per_class": self._per_class(precision)}

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


def score_files(gt: str | Path, results: str | Path, iou_types: Sequence[str] = ("bbox",),
                backend: str = "auto") -> dict[str, dict[str, Any]]:
    """``compute()`` of the detections in the results file ``results`` against the instances
    file ``gt`` (what ``densevit score coco`` does), with the garbage collector paused throughout:
    the files' hundreds of thousands of objects are freed before it runs again, so it never
    walks them (each walk of a 500,000-detection set costs a few tenths of a second)."""
    with gc_paused():
        evaluator = COCOEvaluator(gt, iou_types=iou_types, backend=backend)
        evaluator.add_results_file(results)
        result = evaluator.compute()
        del evaluator
    return result


def evaluate_arrays(gt: GroundTruth, detections: Detections, iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """densevit's own evaluation: pycocotools' ``eval["precision"]`` float64 [T, R, K, A, M] and
    ``eval["recall"]`` [T, K, A, M], bit for bit. Masks are scored with the mask area."""
    area = (detections.boxes[:, 2] * detections.boxes[:, 3] if iou_type == "bbox"
            else mask_area(detections.masks))
    dt = Objects(detections.image, detections.category, detections.boxes, area, detections.masks,
                 scores=detections.scores)
    return accumulate(match(gt.objects(iou_type), dt, len(gt.categories), iou_type))


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
