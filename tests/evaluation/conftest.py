"""Helpers shared by the evaluator tests: reference runs of pycocotools on plain dicts."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str = "bbox") -> np.ndarray:
    """The 12 stats of plain pycocotools (loadRes + COCOeval) on deep copies of the inputs."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


@pytest.fixture(name="pycocotools_stats")
def _pycocotools_stats():
    return pycocotools_stats
