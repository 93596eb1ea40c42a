"""COCO instances files: reading and checking, once, for the training loader and the evaluator alike.

:func:`check_instances` raises on problems of the file as a whole (a missing list, ids that
are not integers or not unique) and returns the problems of single annotations (an image or
category id that is not in the file, a box that is not four finite numbers with a size of at
least zero, an ``iscrowd`` that is not 0 or 1, a missing key, and, when asked, an annotation
id that is missing or repeated), each naming the record and the field, for the caller to
raise or to drop by its policy.
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from densevit.errors import UserInputError


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a ``UserInputError`` naming it."""
    path = Path(path)
    try:
        with path.open() as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    except OSError as err:
        raise UserInputError(f"{path}: cannot read the file ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: malformed JSON ({err})") from None


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def xywh_problem(box: Any) -> str | None:
    """What is wrong with a ``bbox`` value (4 finite numbers, width and height >= 0), or None."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(is_number(v) for v in box)):
        return f"'bbox' must be 4 finite numbers [x, y, width, height], got {box!r}"
    if box[2] < 0 or box[3] < 0:
        return f"'bbox' {list(box)} has a negative width or height"
    return None


def check_instances(data: Any, source: str, required: Sequence[str] = ("bbox",),
                    image_size: bool = False, annotation_ids: bool = False) -> list[tuple[int, str]]:
    """Check a parsed COCO instances object (see the module docstring).

    Args:
        required: annotation keys every annotation must have besides ``image_id`` and
            ``category_id`` (``bbox``, ``segmentation``, ``area``); a ``bbox`` is also checked.
        image_size: every image must have integer ``height`` and ``width``.
        annotation_ids: every annotation must have an integer ``id`` that no annotation before
            it has (a repeat is a problem of the later annotation).

    Returns:
        ``(annotation index, message)`` per bad annotation; messages start with
        ``annotations[k] (annotation id, image id)`` and name the field.
    """
    if not isinstance(data, Mapping):
        raise UserInputError(f"{source}: expected a COCO object with 'images', 'annotations' and "
                             f"'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserInputError(f"{source}: missing key '{key}' (a list)")
    image_ids = _unique_ids(data["images"], "images", source)
    category_ids = _unique_ids(data["categories"], "categories", source)
    if image_size:
        for k, image in enumerate(data["images"]):
            if not (is_int(image.get("height")) and is_int(image.get("width"))):
                raise UserInputError(f"{source}: images[{k}] (id {image['id']}): needs integer 'height' and 'width'")
    problems = []
    first_with_id: dict[int, int] = {}
    for k, ann in enumerate(data["annotations"]):
        problem = _annotation_problem(ann, image_ids, category_ids, required)
        if annotation_ids and isinstance(ann, Mapping) and not problem:
            if not is_int(ann.get("id")):
                problem = f"'id' must be an integer, got {ann.get('id')!r}"
            elif ann["id"] in first_with_id:
                also = first_with_id[ann["id"]]
                problem = f"'id': duplicate annotation id {ann['id']} (also annotations[{also}])"
            else:
                first_with_id[ann["id"]] = k
        if problem:
            problems.append((k, f"annotations[{k}]{describe_annotation(ann)}: {problem}"))
    return problems


def _unique_ids(records: list[Any], key: str, source: str) -> set:
    first: dict[int, int] = {}  # id -> index of the record that has it
    for k, record in enumerate(records):
        if not isinstance(record, Mapping) or not is_int(record.get("id")):
            raise UserInputError(f"{source}: {key}[{k}]: missing or non-integer 'id'")
        if record["id"] in first:
            noun = "category" if key == "categories" else key[:-1]
            raise UserInputError(f"{source}: {key}[{k}]: 'id': duplicate {noun} id {record['id']} "
                                 f"(also {key}[{first[record['id']]}])")
        first[record["id"]] = k
    return set(first)


def _annotation_problem(ann: Any, image_ids: set, category_ids: set, required: Sequence[str]) -> str | None:
    if not isinstance(ann, Mapping):
        return "expected an object"
    for key in ("image_id", "category_id", *required):
        if key not in ann:
            return f"missing key '{key}'"
    if not (is_int(ann["image_id"]) and ann["image_id"] in image_ids):
        return f"image_id {ann['image_id']!r} is not in 'images'"
    if not (is_int(ann["category_id"]) and ann["category_id"] in category_ids):
        return f"category_id {ann['category_id']!r} is not in 'categories'"
    if "iscrowd" in ann and not (isinstance(ann["iscrowd"], numbers.Real) and ann["iscrowd"] in (0, 1)):
        return f"'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}"
    if "area" in required and not is_number(ann["area"]):
        return f"'area' must be a finite number, got {ann['area']!r}"
    if "bbox" in required:
        return xywh_problem(ann["bbox"])
    return None


def describe_annotation(ann: Any) -> str:
    """`` (annotation id 7, image id 3)`` for messages, as far as the annotation has them."""
    if not isinstance(ann, Mapping):
        return ""
    parts = [f"annotation id {ann['id']}" if "id" in ann else "", f"image id {ann['image_id']}" if "image_id" in ann else ""]
    shown = ", ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""
