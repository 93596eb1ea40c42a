"""Detections matched to the ground truth exactly as pycocotools' ``COCOeval.evaluate`` matches
them, for every image, category, area range and IoU threshold at once, as arrays.

pycocotools, per image and category: the detections sorted by score (stable: file order breaks
ties) and cut to the 100 best; the IoU of each with each ground-truth object (crowd regions:
intersection over the detection's area); then, per area range and IoU threshold, each detection
in turn takes the unmatched ground truth of highest IoU (at least the threshold; crowd regions
may be taken again), preferring regular objects to ignored ones (crowd, or area outside the
range), the later object on equal IoU.

Here the same in three vectorised steps: the IoU of every pair of detection and ground truth
that share an image and a category, in one batch (boxes: pycocotools' ``bbIou`` formula in
numpy; masks: ``pycocotools.mask.iou``, once per image); the pairs of IoU >= 0.5 become the
candidates, each detection's candidates ordered by preference once per area range; then a
loop over the rank within image and category (at most 100 steps) in which every detection of
that rank takes its first candidate still free, for all thresholds and area ranges together.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools' Params for bbox and segm.
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]])


@dataclass
class Objects:
    """Ground truth or detections as columns, one row per object, in file order.

    image: int64 [N] internal image id; category: int64 [N] internal category id (1..K);
    boxes: float64 [N, 4] ``[x, y, width, height]``; area: float64 [N]; masks: N compressed RLEs
    (``segm``) or None; crowd: bool [N] (ground truth; False for detections); scores: float64
    [N] (detections; None for the ground truth).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    masks: list | None = None
    crowd: np.ndarray | None = None
    scores: np.ndarray | None = None


@dataclass
class Matches:
    """The detections kept (the 100 best per image and category), in the order accumulation
    takes them (by category, score high first, image, then rank in image and category), and
    their matches.

    category: int64 [D] category index (0..K-1); rank: int64 [D] rank in image and category;
    outside: bool [A, D] area outside each area range; positives: int64 [K, A] regular
    ground-truth objects per category and area range (pycocotools' ``npig``). The matches, one
    per (area range, detection, object matched), sorted by area range then detection: area,
    detection: int64 [E]; thresholds: uint16 [E] bit t set where matched at IoU threshold t;
    to_ignored: bool [E] the object is ignored (crowd, or area out of range: so is the detection).
    """

    category: np.ndarray
    rank: np.ndarray
    outside: np.ndarray
    positives: np.ndarray
    area: np.ndarray
    detection: np.ndarray
    thresholds: np.ndarray
    to_ignored: np.ndarray


def _outside(area: np.ndarray) -> np.ndarray:
    """bool [A, N]: ``area`` outside each area range (pycocotools: ``a < lo or a > hi``)."""
    return (area[None, :] < AREA_RANGES[:, :1]) | (area[None, :] > AREA_RANGES[:, 1:])


def groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values in sorted ``keys``: (unique keys, start, length) each [U]."""
    if not keys.size:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[start], start, np.diff(np.r_[start, keys.size])


def _stable_by(order: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``order`` re-sorted by ``key[order]``, stably (ids below 2**16 sort by radix)."""
    values = key[order]
    if values.size and values.min() >= 0 and values.max() < 2**16:
        values = values.astype(np.uint16)
    return order[np.argsort(values, kind="stable")]


def match(gt: Objects, dt: Objects, categories: int, iou_type: str) -> Matches:
    """Match ``dt`` to ``gt`` (both with internal ids; ``categories`` = K) as pycocotools does."""
    # The detections in pycocotools' two orders, from one sort by score and stable sorts by ids:
    # accumulation (by category, score high first, image, file order) and evaluation (by image
    # and category, then score, file order; ranked in image and category, the first 100 kept).
    by_score = _stable_by(np.arange(dt.image.size), dt.image)
    by_score = _stable_by(by_score[np.argsort(-dt.scores[by_score], kind="stable")], dt.category)
    order = _stable_by(by_score, dt.image)
    _, start, length = groups(dt.image[order] * (categories + 1) + dt.category[order])
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size) - np.repeat(start, length)
    keep = rank < MAX_DETS[-1]
    order, by_score = order[keep[order]], by_score[keep[by_score]]
    slot = np.empty(dt.image.size, np.int64)                            # place in the accumulation order
    slot[by_score] = np.arange(by_score.size)

    gt_order = _stable_by(_stable_by(np.arange(gt.image.size), gt.category), gt.image)
    gt_crowd = gt.crowd[gt_order]
    gt_ignored = gt_crowd[None, :] | _outside(gt.area[gt_order])        # [A, G]

    det, obj, iou = _candidates(gt, dt, order, gt_order, categories, iou_type)
    keep = iou >= min(IOU_THRESHOLDS[0], 1 - 1e-10)
    det, obj, iou = order[det[keep]], obj[keep], iou[keep]
    events = _greedy(slot[det], rank[det], obj, iou, gt_crowd, gt_ignored)
    positives = np.stack([np.bincount(gt.category[gt_order][~ig] - 1, minlength=categories)
                          for ig in gt_ignored], axis=1)
    return Matches(dt.category[by_score] - 1, rank[by_score], _outside(dt.area[by_score]), positives, *events)


def _candidates(gt: Objects, dt: Objects, order: np.ndarray, gt_order: np.ndarray, categories: int,
                iou_type: str) -> tuple[np.ndarray, ...]:
    """Every (detection, ground truth) of one image and category with its IoU.

    ``order`` and ``gt_order`` sort detections and ground truth by image and category (then by
    rank, and file order). Returns (detection position in ``order``, ground-truth position in
    ``gt_order``, IoU), each [E], ordered by image and category, detection, then ground truth.
    """
    dt_keys, dt_start, dt_len = groups(dt.image[order] * (categories + 1) + dt.category[order])
    gt_keys, gt_start, gt_len = groups(gt.image[gt_order] * (categories + 1) + gt.category[gt_order])
    _, i, j = np.intersect1d(dt_keys, gt_keys, assume_unique=True, return_indices=True)
    d_start, d_len, g_start, g_len = dt_start[i], dt_len[i], gt_start[j], gt_len[j]
    size = d_len * g_len
    entry_pair = np.repeat(np.arange(size.size), size)
    offset = np.arange(entry_pair.size) - np.repeat(np.cumsum(size) - size, size)
    det = d_start[entry_pair] + offset // g_len[entry_pair]
    obj = g_start[entry_pair] + offset % g_len[entry_pair]
    crowd = gt.crowd[gt_order]
    if iou_type == "bbox":
        iou = box_iou(dt.boxes[order][det], gt.boxes[gt_order][obj], crowd[obj])
    else:
        iou = _mask_iou([dt.masks[k] for k in order.tolist()], dt.image[order],
                        [gt.masks[k] for k in gt_order.tolist()], gt.image[gt_order], crowd, det, obj)
    return det, obj, iou


def box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of boxes ``d[k]`` and ``g[k]`` (float64 [E, 4] xywh; crowd: bool [E]) -> float64 [E],
    with pycocotools' ``bbIou`` arithmetic, operation for operation (the same bits)."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    d_area = d[:, 2] * d[:, 3]
    union = np.where(crowd, d_area, d_area + g[:, 2] * g[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(d.shape[0])
    np.divide(inter, union, out=out, where=overlap)
    return out


def _mask_iou(dt_masks: list, dt_image: np.ndarray, gt_masks: list, gt_image: np.ndarray, gt_crowd: np.ndarray,
              det: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """IoU of the masks of the (det, obj) entries (both sorted by image): ``pycocotools.mask.iou``
    once per image on the detections and objects it has entries for, read at the entries."""
    dets, objs = np.unique(det), np.unique(obj)
    images = np.unique(dt_image[dets])
    d_lo, d_hi = np.searchsorted(dt_image[dets], images), np.searchsorted(dt_image[dets], images, "right")
    g_lo, g_hi = np.searchsorted(gt_image[objs], images), np.searchsorted(gt_image[objs], images, "right")
    crowd = gt_crowd[objs].astype(np.uint8)
    dt_masks, gt_masks = [dt_masks[k] for k in dets.tolist()], [gt_masks[k] for k in objs.tolist()]
    blocks = [np.asarray(mask_utils.iou(dt_masks[a:b], gt_masks[c:e], crowd[c:e]), np.float64).reshape(-1)
              for a, b, c, e in zip(d_lo.tolist(), d_hi.tolist(), g_lo.tolist(), g_hi.tolist())]
    flat = np.concatenate(blocks) if blocks else np.zeros(0)
    size = (d_hi - d_lo) * (g_hi - g_lo)
    block = np.searchsorted(images, dt_image[det])
    d, o = np.searchsorted(dets, det) - d_lo[block], np.searchsorted(objs, obj) - g_lo[block]
    return flat[(np.cumsum(size) - size)[block] + d * (g_hi - g_lo)[block] + o]


def _greedy(det: np.ndarray, rank: np.ndarray, obj: np.ndarray, iou: np.ndarray, crowd: np.ndarray,
            gt_ignored: np.ndarray) -> tuple[np.ndarray, ...]:
    """pycocotools' greedy matching over the candidates (det, obj, iou: [C], those of one
    detection together; rank: of det in its image and category; obj indexes the ground truth,
    crowd [G], gt_ignored [A, G]).

    The IoU thresholds are the bits of a uint16: per candidate, those it reaches; per object and
    area range, those at which it is taken. Detections of one rank are in different images or
    categories, so they never compete: each takes, per threshold, its first candidate (in order
    of preference) that reaches it and is not taken (crowd regions are never taken).

    Returns the matches as in :class:`Matches`: area, detection, thresholds, to_ignored [E].
    """
    areas, thresholds = len(AREA_RANGES), np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    reaches = ((iou[:, None] >= thresholds[None, :]) << np.arange(thresholds.size)).sum(1).astype(np.uint16)
    never = np.where(crowd, 0, 0xFFFF).astype(np.uint16)                # crowd regions stay free
    # Runs of one detection's candidates; within a run, per area range, the order of preference
    # (regular object first, higher IoU, later object); then the runs by rank (radix sort).
    first = np.r_[True, det[1:] != det[:-1]]
    run = np.cumsum(first) - 1
    in_run = np.arange(det.size) - np.flatnonzero(first)[run]
    prefer = np.tile(np.arange(det.size), (areas, 1))
    shared = np.flatnonzero(np.bincount(run)[run] > 1)
    for a in range(areas):
        prefer[a, shared] = shared[np.lexsort((-obj[shared], -iou[shared], gt_ignored[a][obj[shared]], run[shared]))]
    by_rank = np.argsort(rank.astype(np.uint8), kind="stable")
    prefer, run, in_run = prefer[:, by_rank], run[by_rank], in_run[by_rank]
    taken = np.zeros((areas, crowd.size), np.uint16)
    rows = np.arange(areas)[:, None]
    found = []
    for lo, n in zip(*groups(rank[by_rank])[1:]):
        cand = prefer[:, lo:lo + n]                                     # [A, n]
        o = obj[cand]
        free = reaches[cand] & ~(taken[rows, o] & never[o])
        runs = np.cumsum(np.r_[0, np.diff(run[lo:lo + n]) != 0])
        claimed = np.zeros((areas, runs[-1] + 1), np.uint16)
        chosen = np.zeros_like(free)
        for j in range(int(in_run[lo:lo + n].max()) + 1):
            at = np.flatnonzero(in_run[lo:lo + n] == j)
            chosen[:, at] = free[:, at] & ~claimed[:, runs[at]]
            claimed[:, runs[at]] |= chosen[:, at]
        taken[rows, o] |= chosen
        a, c = np.nonzero(chosen)
        found.append((a, det[cand[a, c]], chosen[a, c], gt_ignored[a, o[a, c]]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, bool)
    a, d, bits, to_ignored = (np.concatenate(column) for column in zip(*found))
    order = np.argsort(a * (det.max() + 1) + d, kind="stable")
    return a[order], d[order], bits[order], to_ignored[order]
