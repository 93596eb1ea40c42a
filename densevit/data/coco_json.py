"""COCO instances files: reading and checking, once, for the training loader and the evaluator alike.

:func:`check_instances` raises on problems of the file as a whole (a missing list, ids that
are not integers or not unique) and returns the problems of single annotations (an image or
category id that is not in the file, a box that is not four finite numbers with a size of at
least zero, an ``iscrowd`` that is not 0 or 1, a missing key, and, when asked, an annotation
id that is missing or repeated), each naming the record and the field, for the caller to
raise or to drop by its policy.

:class:`Instances` is a split read into such an object from any of the supported layouts
(COCO JSON, YOLO labels, Pascal VOC XML: :func:`read_instances`), so that one set of checks
and one dataset class serve them all; :func:`report_bad_records` raises or warns about the bad
records a reader or a dataset found, by the ``data.bad_annotations`` policy.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from densevit.errors import UserInputError, suspicious

try:
    import msgspec
except ImportError:  # optional: pip install 'densevit[fast]'
    msgspec = None

FORMATS = ("coco", "yolo", "voc")  # the layouts data.format names
SHOWN = 3  # offenders named in the warning of the "drop" policy
# Key of an annotation read from YOLO or VOC files: where it came from (``labels/a.txt line 3``),
# named in messages about it; never written to a COCO file.
ORIGIN = "origin"


@dataclass(frozen=True)
class Instances:
    """One split of a detection dataset as a COCO instances object (not checked yet).

    Attributes:
        data: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations``
            (``id``, ``image_id``, ``category_id``, ``bbox`` pixel xywh, ``area``, ``iscrowd``)
            and ``categories`` (``id``, ``name``).
        image_dir: the folder that the images' ``file_name`` are relative to.
        source: the file that messages about the split name (the JSON file, the YOLO
            ``data.yaml``, the VOC ``ImageSets/Main/<split>.txt``).
    """

    data: Any
    image_dir: Path
    source: str


def read_instances(layout: str, source: str | Path, split: str = "", image_dir: str | Path = "",
                   class_names: Sequence[str] = (), bad_annotations: str = "raise") -> Instances:
    """Read one split in ``layout`` (``coco``, ``yolo`` or ``voc``).

    Args:
        source: the COCO JSON file, the YOLO ``data.yaml``, or the VOC root (``VOCdevkit/VOC2007``).
        split: the ``data.yaml`` key (YOLO) or the ``ImageSets/Main`` list name (VOC).
        image_dir: the images folder of a COCO file.
        class_names: the VOC classes (default: the 20 of Pascal VOC).
        bad_annotations: what the YOLO and VOC readers do with a bad line or object
            (``raise`` or ``drop``); a COCO file is checked by its user.
    """
    if layout == "yolo":
        from densevit.data.yolo import read_yolo

        return read_yolo(source, split, bad_annotations)
    if layout == "voc":
        from densevit.data.voc import read_voc

        return read_voc(source, split, class_names or None, bad_annotations)
    if layout != "coco":
        raise UserInputError(f"data.format: expected one of {', '.join(FORMATS)}, got {layout!r}")
    return Instances(read_json(source), Path(image_dir), str(source))


def without_origins(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the annotations' :data:`ORIGIN` left out (for writing a COCO file)."""
    return {**data, "annotations": [{k: v for k, v in ann.items() if k != ORIGIN} for ann in data["annotations"]]}


def counted(count: int, noun: str) -> str:
    """``1 image``, ``3 images``; empty for 0."""
    return f"{count} {noun}{'s' if count != 1 else ''}" if count else ""


def report_bad_records(problems: Sequence[str], policy: str, source: str,
                       kinds: Sequence[tuple[int, str]] = (), named: bool = False) -> None:
    """Raise the first of ``problems`` (policy ``raise``, or its old name ``error``), or warn once
    about them all (``drop``), counting them and naming the first few.

    Args:
        source: the file the records belong to, which starts the line.
        kinds: (count, noun) per kind of record, for the warning (``3 annotations, 1 image``).
        named: each problem names its own file (a YOLO label file, a VOC XML file): the raised
            line is then the first problem alone.
    """
    count = len(problems)
    if not count:
        return
    if policy != "drop":
        more = (f" (and {count - 1} more bad records; data.bad_annotations: drop leaves them out)"
                if count > 1 else "")
        raise UserInputError(f"{'' if named else source + ': '}{problems[0]}{more}")
    parts = ", ".join(text for text in (counted(n, noun) for n, noun in kinds) if text)
    shown = "; ".join(problems[:SHOWN]) + ("; ..." if count > SHOWN else "")
    suspicious(f"{source}: data.bad_annotations=drop: dropped {counted(count, 'bad record')}"
               f"{f' ({parts})' if parts else ''}: {shown}")


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes; a missing or unreadable file is a ``UserInputError`` naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    except OSError as err:
        raise UserInputError(f"{path}: cannot read the file ({err.strerror or err})") from None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a ``UserInputError`` naming it.

    With msgspec installed (``pip install 'densevit[fast]'``) it parses, two to three times
    faster than ``json``; what msgspec refuses but ``json`` reads (``NaN``, ``1e999``) is read
    by ``json``. The garbage collector is paused while the objects are built: a results file is
    hundreds of thousands of small dicts, and the collections they would trigger find nothing.
    """
    raw = read_bytes(path)
    with gc_paused():
        if msgspec is not None:
            try:
                return msgspec.json.decode(raw)
            except msgspec.MsgspecError:
                pass
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserInputError(f"{path}: malformed JSON ({err})") from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (for work that builds many objects and frees none)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float64
        return False


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
    if _all_fine(data["annotations"], image_ids, category_ids, required, annotation_ids):
        return []
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


def _all_fine(anns: list[Any], image_ids: set, category_ids: set, required: Sequence[str],
              annotation_ids: bool) -> bool:
    """True when no annotation has a problem, found column by column (a whole column's types at
    once, boxes and areas as arrays): the common case, without a loop in Python. False says only
    that the loop must look."""
    if not set(map(type, anns)) <= {dict}:
        return False
    try:
        columns = {key: [ann[key] for ann in anns] for key in ("image_id", "category_id", *required)}
    except KeyError:
        return False
    crowd = [ann.get("iscrowd", 0) for ann in anns]
    ids = [ann.get("id") for ann in anns] if annotation_ids else []
    fine = (set(map(type, columns["image_id"])) <= {int} and set(columns["image_id"]) <= image_ids
            and set(map(type, columns["category_id"])) <= {int} and set(columns["category_id"]) <= category_ids
            and set(map(type, crowd)) <= {int, float, bool} and set(crowd) <= {0, 1}
            and set(map(type, ids)) <= {int} and len(set(ids)) == len(ids))
    if fine and "area" in required:
        try:
            fine = set(map(type, columns["area"])) <= {int, float} and bool(np.isfinite(np.array(columns["area"], float)).all())
        except OverflowError:  # an integer beyond float64
            fine = False
    if fine and "bbox" in required:
        fine = xywh_array(columns["bbox"]) is not None
    return fine


def xywh_array(boxes: list[Any]) -> np.ndarray | None:
    """``bbox`` values as float64 [N, 4] when every one is 4 finite numbers with width and height
    >= 0 (checked as a column: their types at once, the numbers as an array), else None."""
    n = len(boxes)
    if not (set(map(type, boxes)) <= {list, tuple} and set(map(len, boxes)) <= {4}
            and set(map(type, chain.from_iterable(boxes))) <= {int, float}):
        return None
    try:
        array = np.fromiter(chain.from_iterable(boxes), np.float64, 4 * n).reshape(n, 4)
    except OverflowError:  # an integer beyond float64
        return None
    return array if np.isfinite(array).all() and (array[:, 2:] >= 0).all() else None


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
    """`` (annotation id 7, image id 3)`` for messages, as far as the annotation has them, after
    the line or element it was read from (``(labels/a.txt line 3, annotation id 7, image id 3)``)."""
    if not isinstance(ann, Mapping):
        return ""
    parts = [str(ann.get(ORIGIN, "")), f"annotation id {ann['id']}" if "id" in ann else "",
             f"image id {ann['image_id']}" if "image_id" in ann else ""]
    shown = ", ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""
