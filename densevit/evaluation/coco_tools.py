"""The reference tools as backends: pycocotools' ``COCOeval`` or faster-coco-eval's
``COCOeval_faster`` run on the checked, renumbered detections (``backend="pycocotools"`` or
``"faster_coco_eval"``), for those who want the tools' own run; the own evaluator gives the
same numbers.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevit.evaluation.coco_gt import GroundTruth, silent
from densevit.evaluation.coco_results import Detections, mask_area


def evaluate_with_tool(backend: str, gt: GroundTruth, detections: Detections, iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """The 12 stats and the precision array [T, R, K, A, M] of the tool ``backend``."""
    dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
               "annotations": annotations(detections, iou_type)}
    if backend == "pycocotools":
        dt = COCO()
        dt.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
            evaluator = COCOeval(gt.coco(backend), dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    else:
        import faster_coco_eval

        dt = faster_coco_eval.COCO(dataset, print_function=silent)
        evaluator = faster_coco_eval.COCOeval_faster(gt.coco(backend), dt, iou_type, print_function=silent)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], dtype=np.float64), evaluator.eval["precision"]


def annotations(detections: Detections, iou_type: str) -> list[dict[str, Any]]:
    """The detections as COCO result annotations, as ``COCO.loadRes`` would make them, by image
    (file order within an image), ids 1..N. Masks get the mask area (see :mod:`~densevit.evaluation.coco`)."""
    order = np.argsort(detections.image, kind="stable")
    images, categories = detections.image[order].tolist(), detections.category[order].tolist()
    scores = detections.scores[order].tolist()
    if iou_type == "bbox":
        boxes = detections.boxes[order]
        areas = (boxes[:, 2] * boxes[:, 3]).tolist()
        return [{"id": k + 1, "image_id": image, "category_id": category, "bbox": box, "area": area,
                 "score": score, "iscrowd": 0}
                for k, (image, category, box, area, score) in
                enumerate(zip(images, categories, boxes.tolist(), areas, scores))]
    masks = [detections.masks[k] for k in order.tolist()]
    if not masks:
        return []
    areas, boxes = mask_area(masks).tolist(), mask_utils.toBbox(masks).tolist()
    return [{"id": k + 1, "image_id": image, "category_id": category, "segmentation": rle, "area": area,
             "bbox": box, "score": score, "iscrowd": 0}
            for k, (image, category, rle, area, box, score) in
            enumerate(zip(images, categories, masks, areas, boxes, scores))]
