"""pycocotools' ``COCOeval.accumulate`` and ``summarize`` on matched detections, as arrays.

pycocotools, per category, area range and maxDets: the detections of all images (each image's
best ``maxDets``) sorted by score (stable), cumulative true and false positives per IoU
threshold, recall ``tp / npig``, precision ``tp / (tp + fp + eps)`` made non-increasing from the
right, read at the first detection reaching each of the 101 recall thresholds (0 past the last).

The precision read at a recall threshold is the highest precision at or after the first true
positive that reaches it (after a false positive or an ignored detection precision does not
rise, and before the first true positive it is 0), so only the true positives are visited: the
``c``-th true positive of a curve at the ``n``-th counted detection has precision
``c / (n + eps)``, the same floating-point operations as pycocotools'. Recall thresholds map to
true-positive counts by the same division ``c / npig``; the suffix maxima come from one
``maximum.reduceat`` over all curves. The results are bit for bit pycocotools' arrays.
"""
from __future__ import annotations

import numpy as np

from densevit.evaluation.coco_match import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    Matches,
    groups,
)

AREA_NAMES = ("all", "small", "medium", "large")


def accumulate(matches: Matches) -> tuple[np.ndarray, np.ndarray]:
    """precision float64 [T, R, K, A, M] and recall [T, K, A, M], -1 where a category has no
    regular ground truth in an area range (pycocotools' ``eval["precision"]``, ``["recall"]``)."""
    t_count, r_count = IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size
    k_count, a_count = matches.positives.shape
    precision = -np.ones((t_count, r_count, k_count, a_count, len(MAX_DETS)))
    recall = -np.ones((t_count, k_count, a_count, len(MAX_DETS)))
    positives = matches.positives.T                                     # [A, K]
    # The true-positive count each recall threshold needs: the first c with c / npig >= x.
    needed = np.zeros((a_count, k_count, r_count), np.int64)
    for a, k in zip(*np.nonzero(positives)):
        npig = positives[a, k]
        needed[a, k] = np.searchsorted(np.arange(npig + 1, dtype=np.float64) / npig, RECALL_THRESHOLDS, "left")
    has_gt = positives > 0                                              # [A, K]
    for m, max_dets in enumerate(MAX_DETS):
        per_curve, tp, seen = _true_positives(matches, max_dets)
        pr = tp.astype(np.float64) / (seen.astype(np.float64) + np.spacing(1))  # tp / (fp + tp + eps)
        recall[:, :, :, m] = np.where(has_gt, per_curve / np.maximum(positives, 1), -1.0).transpose(0, 2, 1)
        prec = np.where(has_gt[None, :, :, None], 0.0, -1.0) * np.ones((t_count, 1, 1, r_count))  # [T, A, K, R]
        live = np.flatnonzero(per_curve)
        if live.size:
            lt, la, lk = np.unravel_index(live, per_curve.shape)
            count = per_curve.reshape(-1)
            want = np.maximum(needed[la, lk], 1)                        # [L, R]
            reached = want <= count[live][:, None]
            start = (np.cumsum(count) - count)[live][:, None]
            index = start + np.minimum(want, count[live][:, None]) - 1
            block = np.maximum.reduceat(pr, index.reshape(-1)).reshape(index.shape)
            best = np.maximum.accumulate(block[:, ::-1], axis=1)[:, ::-1]
            prec[lt, la, lk] = np.where(reached, best, 0.0)
        precision[:, :, :, :, m] = prec.transpose(0, 3, 2, 1)
    return precision, recall


def _true_positives(matches: Matches, max_dets: int) -> tuple[np.ndarray, ...]:
    """The true positives among each image's best ``max_dets`` per category.

    Returns their number per curve (int64 [T, A, K]: IoU threshold, area range, category) and,
    for each in the order of the curves and within a curve in score order, its count so far
    (``tp``) and the detections counted so far (``tp + fp``), int [P].

    Counted: an unmatched detection whose area is in the range; a matched one unless matched to
    an ignored object. So the count is the detections in range so far, corrected by the matches.
    """
    t_count, (k_count, a_count) = IOU_THRESHOLDS.size, matches.positives.shape
    keep = matches.rank < max_dets
    place = np.cumsum(keep) - 1                                         # in the kept order
    category = matches.category[keep]
    first = np.searchsorted(category, np.arange(k_count))              # each category's first place
    inside = np.zeros((a_count, category.size + 1), np.int32)
    np.cumsum(~matches.outside[:, keep], axis=1, out=inside[:, 1:])     # in range among the first p
    kept = np.flatnonzero(keep[matches.detection])
    a, d, ignored = matches.area[kept], matches.detection[kept], matches.to_ignored[kept]
    p = place[d]
    k = category[p]
    matched = ((matches.thresholds[kept] >> np.arange(t_count, dtype=np.uint16)[:, None]) & 1).astype(bool)  # [T, E]
    positive = matched & ~ignored
    # Sums along the matches, within each run of one (a, k) (they are sorted by a, then place).
    curves, run_start, run_len = groups(a * k_count + k)
    per_curve = np.zeros((t_count, a_count * k_count), np.int64)
    if kept.size:
        per_curve[:, curves] = np.add.reduceat(positive, run_start, axis=1, dtype=np.int64)
    correction = (~ignored).astype(np.int32) - (~matches.outside[a, d]).astype(np.int32)
    corrected = np.cumsum(matched * correction, axis=1, dtype=np.int32)
    corrected -= np.repeat(corrected[:, run_start] - matched[:, run_start] * correction[run_start], run_len, axis=1)
    seen = (corrected + (inside[a, p + 1] - inside[a, first[k]]))[positive]
    count = per_curve.reshape(-1)
    tp = np.arange(1, seen.size + 1) - np.repeat(np.cumsum(count) - count, count)
    return per_curve.reshape(t_count, a_count, k_count), tp, seen


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 stats of pycocotools' ``COCOeval.summarize`` (same indexing and means): AP,
    AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl."""

    def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        aind = [i for i, name in enumerate(AREA_NAMES) if name == area]
        mind = [i for i, m in enumerate(MAX_DETS) if m == max_dets]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    assert len(AREA_RANGES) == len(AREA_NAMES)
    return np.array([one(True), one(True, .5), one(True, .75), one(True, area="small"),
                     one(True, area="medium"), one(True, area="large"), one(False, max_dets=1),
                     one(False, max_dets=10), one(False), one(False, area="small"),
                     one(False, area="medium"), one(False, area="large")])
