"""Detections in: a COCO results list checked column by column, and the checked columns.

A results list of 500,000 detections is checked as whole columns: the types of a column at
once (``set(map(type, column))``), ids mapped through a dict in one pass, boxes and scores as
float64 arrays tested with numpy; only when a column fails does a loop find the first record
at fault, for a one-line error naming the file, the record index and the field.

A results file (:func:`read_results`) is read faster still with msgspec: parsed straight into
typed records (its parser checks the types), whose columns go straight into arrays; any file it
refuses is read and checked as a list, for the same errors.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from densevit.data.coco_json import (
    is_int,
    is_number,
    msgspec,
    read_bytes,
    read_json,
    xywh_array,
    xywh_problem,
)
from densevit.errors import UserInputError

NUMBER_TYPES = {int, float}


@dataclass
class Detections:
    """Detections as columns, one row each, the order of their file within an image.

    image: int64 [N] internal image ids; category: int64 [N] internal category ids; boxes:
    float64 [N, 4] pixel ``[x, y, width, height]``; scores: float64 [N]; masks: N compressed
    RLEs (mask evaluation) or None.
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    masks: list[dict] | None = None

    def take(self, rows: np.ndarray) -> Detections:
        """The detections at ``rows`` (int [M] or bool [N])."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        masks = None if self.masks is None else [self.masks[k] for k in rows.tolist()]
        return Detections(self.image[rows], self.category[rows], self.boxes[rows], self.scores[rows], masks)

    @staticmethod
    def concatenate(parts: Sequence[Detections], with_masks: bool) -> Detections:
        if not parts:
            empty = np.zeros(0, np.int64)
            return Detections(empty, empty, np.zeros((0, 4)), np.zeros(0), [] if with_masks else None)
        masks = list(chain.from_iterable(p.masks for p in parts)) if with_masks else None
        return Detections(*(np.concatenate([getattr(p, key) for p in parts])
                            for key in ("image", "category", "boxes", "scores")), masks)


def check_boxes(xywh: np.ndarray, scores: np.ndarray, describe: Any) -> None:
    """Finite boxes and scores, width and height >= 0; ``describe(k)`` names detection k in the error."""
    bad = ~(np.isfinite(xywh).all(axis=1) & np.isfinite(scores))
    if bad.any():
        raise UserInputError(f"{describe(int(np.argmax(bad)))}: boxes and scores must be finite")
    negative = (xywh[:, 2:] < 0).any(axis=1)
    if negative.any():
        raise UserInputError(f"{describe(int(np.argmax(negative)))}: has a negative width or height")


def columns(results: Any, keys: Sequence[str], source: str) -> dict[str, list[Any]]:
    """One list per key over all records; the first record that is no object or lacks a key is an error."""
    if not isinstance(results, list):
        raise UserInputError(f"{source}: expected a list of detections, got {type(results).__name__}")
    try:
        if set(map(type, results)) <= {dict}:
            return {key: [record[key] for record in results] for key in keys}
    except KeyError:
        pass
    for k, record in enumerate(results):
        if not isinstance(record, Mapping):
            raise UserInputError(f"{source}: [{k}]: expected an object, got {type(record).__name__}")
        for key in keys:
            if key not in record:
                raise UserInputError(f"{source}: [{k}]: missing key '{key}'")
    return {key: [record[key] for record in results] for key in keys}


def mapped_ids(values: list[Any], table: Mapping[int, int], source: str, key: str, missing: str) -> np.ndarray:
    """File ids -> internal ids, int64 [N]; the first value that is no integer, or not in
    ``table``, is an error naming its record."""
    if not set(map(type, values)) <= {int}:  # bools are no ids; other integer types are read as int
        for k, value in enumerate(values):
            if not is_int(value):
                raise UserInputError(f"{source}: [{k}]: {key} must be an integer, got {value!r}")
        values = [int(v) for v in values]
    try:
        return np.fromiter(map(table.__getitem__, values), np.int64, len(values))
    except KeyError as err:
        k = values.index(err.args[0])
        raise UserInputError(f"{source}: [{k}]: {key} {values[k]} {missing}") from None


def number_column(values: list[Any], source: str, key: str) -> np.ndarray:
    """Scores (one finite number each) as float64 [N]; the first that is not is an error."""
    if set(map(type, values)) <= NUMBER_TYPES:
        try:
            array = np.array(values, dtype=np.float64)
            if np.isfinite(array).all():
                return array
        except OverflowError:
            pass
    for k, value in enumerate(values):
        if not is_number(value):
            raise UserInputError(f"{source}: [{k}]: {key!r} must be a finite number, got {value!r}")
    return np.array([float(v) for v in values], dtype=np.float64)


def box_column(values: list[Any], source: str) -> np.ndarray:
    """``bbox`` values (4 finite numbers, width and height >= 0) as float64 [N, 4]; the first
    that is not is an error."""
    array = xywh_array(values)
    if array is not None:
        return array
    for k, value in enumerate(values):
        problem = xywh_problem(value)
        if problem:
            raise UserInputError(f"{source}: [{k}]: {problem}")
    return np.array([[float(v) for v in box] for box in values], dtype=np.float64).reshape(-1, 4)


def mask_column(values: list[Any], images: np.ndarray, sizes: np.ndarray, source: str) -> list[dict]:
    """``segmentation`` values as compressed RLEs, checked against the image sizes.

    images: int64 [N] internal image ids; sizes: int64 [images + 1, 2] ``(height, width)`` per
    internal id. Compressed RLEs of the right size are taken as they are (checked as a column);
    uncompressed RLEs and polygons are converted one at a time.
    """
    n = len(values)
    if set(map(type, values)) <= {dict}:
        try:
            counts = set(map(type, map(itemgetter("counts"), values)))
            size = np.array([v["size"] for v in values], dtype=np.int64).reshape(n, -1)
        except (KeyError, TypeError, ValueError, OverflowError):
            counts, size = set(), np.zeros((n, 0), np.int64)
        if counts <= {str, bytes} and size.shape == (n, 2) and (size == sizes[images]).all():
            return list(values)
    return [to_rle(v, *sizes[image], f"{source}: [{k}]") for k, (v, image) in enumerate(zip(values, images.tolist()))]


def to_rle(segmentation: Any, height: int, width: int, where: str) -> dict:
    """A compressed RLE of ``segmentation`` (RLE or polygons), checked against the image size."""
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


def mask_area(masks: list[dict]) -> np.ndarray:
    """float64 [N]: the pixel counts of compressed RLEs (``pycocotools.mask.area`` on 255 at a
    time: with numpy 2 it fails on longer lists)."""
    parts = [mask_utils.area(masks[k:k + 255]) for k in range(0, len(masks), 255)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _keys(iou_types: Sequence[str]) -> tuple[str, ...]:
    return ("image_id", "category_id", "score") + tuple("bbox" if t == "bbox" else "segmentation" for t in iou_types)


def from_results(results: Any, iou_types: Sequence[str], image_ids: Mapping[int, int],
                 category_ids: Mapping[int, int], sizes: np.ndarray, source: str, gt_source: str) -> Detections:
    """Check a COCO results list (``image_id``, ``category_id``, ``score``, and ``bbox`` and/or
    ``segmentation`` as ``iou_types`` need) and return it as columns with internal ids.

    image_ids, category_ids: the file's id -> internal id; sizes: int64 [images + 1, 2] image
    ``(height, width)`` per internal id; source, gt_source: how errors name the two files.
    """
    cols = columns(results, _keys(iou_types), source)
    images = mapped_ids(cols["image_id"], image_ids, source, "image_id", f"is not in the ground truth {gt_source}")
    categories = mapped_ids(cols["category_id"], category_ids, source, "category_id",
                            "is not in the ground truth categories")
    scores = number_column(cols["score"], source, "score")
    boxes = box_column(cols["bbox"], source) if "bbox" in iou_types else np.zeros((len(images), 4))
    masks = mask_column(cols["segmentation"], images, sizes, source) if "segm" in iou_types else None
    return Detections(images, categories, boxes, scores, masks)


def read_results(path: str | Path, iou_types: Sequence[str], image_ids: Mapping[int, int],
                 category_ids: Mapping[int, int], sizes: np.ndarray, gt_source: str) -> Detections:
    """:func:`from_results` of a results file, read fast: with msgspec, straight into typed
    records (ids integers, scores and boxes numbers, checked as it parses; no dict per record)
    whose columns go straight into arrays. A file that msgspec refuses or whose values are out of
    bounds, or any file without msgspec, is read as JSON and checked as a list, so that the error
    names the record and the field and quotes the value as the file has it."""
    raw = read_bytes(path)
    if msgspec is not None:
        try:
            return _from_records(_decoder(tuple(iou_types)).decode(raw), iou_types, image_ids, category_ids,
                                 sizes, str(path))
        except (msgspec.MsgspecError, KeyError, UserInputError):
            pass
    return from_results(read_json(path), iou_types, image_ids, category_ids, sizes, str(path), gt_source)


def _from_records(records: list[Any], iou_types: Sequence[str], image_ids: Mapping[int, int],
                  category_ids: Mapping[int, int], sizes: np.ndarray, source: str) -> Detections:
    """Typed records (see :func:`_decoder`) as columns; an unknown id is a KeyError, a box of
    negative size a UserInputError."""
    n = len(records)

    def column(key: str) -> Any:
        return map(attrgetter(key), records)

    images = np.fromiter(map(image_ids.__getitem__, column("image_id")), np.int64, n)
    categories = np.fromiter(map(category_ids.__getitem__, column("category_id")), np.int64, n)
    scores = np.fromiter(column("score"), np.float64, n)
    boxes = np.zeros((n, 4))
    if "bbox" in iou_types:
        boxes = np.fromiter(chain.from_iterable(column("bbox")), np.float64, 4 * n).reshape(n, 4)
    if not (np.isfinite(scores).all() and np.isfinite(boxes).all() and (boxes[:, 2:] >= 0).all()):
        raise UserInputError(f"{source}: a box or score out of bounds")
    masks = mask_column(list(column("segmentation")), images, sizes, source) if "segm" in iou_types else None
    return Detections(images, categories, boxes, scores, masks)


@functools.cache
def _decoder(iou_types: tuple[str, ...]) -> Any:
    """A msgspec decoder of a results list with the fields ``iou_types`` need (others ignored)."""
    fields = [("image_id", int), ("category_id", int), ("score", float)]
    if "bbox" in iou_types:
        fields.append(("bbox", tuple[float, float, float, float]))
    if "segm" in iou_types:
        fields.append(("segmentation", dict | list))
    return msgspec.json.Decoder(list[msgspec.defstruct("Detection", fields, gc=False)])
