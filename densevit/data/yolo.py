"""YOLO (ultralytics) detection data read as a COCO instances object.

The layout ultralytics trains on::

    data.yaml            path: .  (optional root; relative to this file's folder)
                         train: images/train   (a folder, a .txt list of images, or a list of those)
                         val: images/val
                         names: [cat, dog]     (or {0: cat, 1: dog}; nc, if given, must agree)
    images/train/a.jpg   labels/train/a.txt    one line per object: class cx cy w h
    images/val/b.jpg     labels/val/b.txt      (normalised to [0, 1] by the image's width and height)

An image's label file is its path with the last ``images`` folder replaced by ``labels`` and
the suffix by ``.txt`` (beside the image when the path has no ``images`` folder); an image
without a label file has no objects, as in ultralytics. A line of more than five numbers is a
polygon (``class x1 y1 x2 y2 x3 y3 ...``, a YOLO segment label): its bounding box is taken,
as ultralytics does for detection. Images of a folder are found in its subfolders too; a
``.txt`` list names one image per line, relative to the list's folder when not absolute.

Each image gets its size from its header (the pixels are not decoded; an EXIF rotation is
applied as ultralytics does) and an id 1..N in path order; class ``c`` becomes category id
``c + 1``, named by ``names``. A bad line (not 5 numbers or a polygon, a class that is not an
integer in [0, nc), a coordinate that is not a finite number in [0, 1] give or take
:data:`TOLERANCE`) is an error naming the label file and the line, or is dropped with one warning
(``data.bad_annotations: drop``); the boxes it gives are then checked as every COCO box is,
and messages about them name the label file and line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from densevit.data import IMAGE_SUFFIXES
from densevit.data.coco_json import ORIGIN, Instances, report_bad_records
from densevit.data.images import picture_size
from densevit.errors import UserInputError, note
from densevit.io import load_yaml, yaml_problem

TOLERANCE = 1e-3  # normalised coordinates a little outside [0, 1] (rounding in export tools) are kept
def read_yolo(data_yaml: str | Path, split: str, bad_annotations: str = "raise") -> Instances:
    """Split ``split`` (a key of ``data.yaml``: ``train``, ``val``, ``test``) as COCO instances;
    see the module docstring."""
    data_yaml = Path(data_yaml)
    spec = _read_yaml(data_yaml)
    root = data_yaml.parent / str(spec.get("path") or "")
    names = class_names(spec, data_yaml)
    if split not in spec or not spec[split]:
        splits = ", ".join(k for k in ("train", "val", "test") if spec.get(k)) or "none"
        raise UserInputError(f"{data_yaml}: no '{split}' entry (the splits it names: {splits})")
    entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
    if not all(isinstance(entry, str) for entry in entries):
        raise UserInputError(f"{data_yaml}: '{split}': expected a folder or .txt list of images (or a list of "
                             f"them), got {spec[split]!r}")
    folders = [root / entry for entry in entries]
    images = sorted({path for folder in folders for path in _list_images(folder, data_yaml, split)})
    if not images:
        raise UserInputError(f"{data_yaml}: '{split}': no image found in {', '.join(map(str, folders))}")
    image_dir = folders[0] if len(folders) == 1 and folders[0].is_dir() else root

    problems: list[str] = []
    duplicates: list[str] = []  # where a label line repeats an earlier one of its file
    records: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, path in enumerate(images, 1):
        try:
            width, height = picture_size(path)
        except UserInputError as err:
            problems.append(str(err))
            continue
        records.append({"id": image_id, "file_name": _relative(path, image_dir), "width": width, "height": height})
        label_file = label_path(path)
        seen: set[Any] = set()
        for number, line in _lines(label_file):
            box, problem = _parse_line(line.split(), len(names))
            if problem:
                problems.append(f"{label_file}: line {number}: {problem}")
                continue
            if box in seen:  # ultralytics drops repeated lines too: one object, not two
                duplicates.append(f"{label_file} line {number}")
                continue
            seen.add(box)
            category, (x1, y1, x2, y2) = box
            bbox = [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category + 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
                                ORIGIN: f"{label_file} line {number}"})
    report_bad_records(problems, bad_annotations, f"{data_yaml} ('{split}')", named=True)
    if duplicates:
        note(f"{data_yaml} ('{split}'): left out {len(duplicates)} repeated label line(s) "
             f"(the same class and box as an earlier line): {', '.join(duplicates[:3])}"
             f"{', ...' if len(duplicates) > 3 else ''}")
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(names)]
    return Instances({"images": records, "annotations": annotations, "categories": categories},
                     image_dir, str(data_yaml))


def label_path(image: Path) -> Path:
    """The label file of ``image``: the last ``images`` folder of its path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def class_names(spec: dict[str, Any], data_yaml: Path) -> list[str]:
    """The class names of a parsed ``data.yaml``: ``names`` as a list or {index: name}, or
    ``class_0``... for ``nc`` alone; ``nc`` and ``names`` must agree."""
    names, nc = spec.get("names"), spec.get("nc")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserInputError(f"{data_yaml}: 'names': expected class indices 0..{len(names) - 1} as keys, "
                                 f"got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if names is None and isinstance(nc, int) and nc > 0:
        names = [f"class_{i}" for i in range(nc)]
    if not isinstance(names, list) or not names:
        raise UserInputError(f"{data_yaml}: 'names': expected a list of class names or {{index: name}}, got {names!r}")
    if nc is not None and nc != len(names):
        raise UserInputError(f"{data_yaml}: 'nc' is {nc!r} but 'names' lists {len(names)} classes")
    return [str(name) for name in names]


def _read_yaml(data_yaml: Path) -> dict[str, Any]:
    try:
        spec = load_yaml(data_yaml.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserInputError(f"{data_yaml}: not UTF-8 text (the YOLO data.yaml)") from None
    except FileNotFoundError:
        raise UserInputError(f"{data_yaml}: file not found (the YOLO data.yaml)") from None
    except OSError as err:
        raise UserInputError(f"{data_yaml}: cannot read the file ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"{data_yaml}: malformed YAML ({yaml_problem(err)})") from None
    if not isinstance(spec, dict):
        raise UserInputError(f"{data_yaml}: expected a mapping with 'train', 'val' and 'names', got "
                             f"{type(spec).__name__}")
    return spec


def _list_images(entry: Path, data_yaml: Path, split: str) -> list[Path]:
    """The pictures of a folder (and its subfolders), or of a .txt list."""
    if entry.is_dir():
        return [p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if entry.suffix == ".txt" and entry.is_file():
        lines = entry.read_text(encoding="utf-8").splitlines()
        return [entry.parent / line.strip() for line in lines if line.strip()]
    raise UserInputError(f"{data_yaml}: '{split}': {entry} is neither a folder nor a .txt list of images")


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _lines(label_file: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines; none for a missing file (an image without objects)."""
    try:
        text = label_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"{label_file}: cannot read the label file ({err})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_line(fields: list[str], nc: int) -> tuple[Any, str | None]:
    """((class index, normalised x1 y1 x2 y2), None), or (None, what is wrong)."""
    expected = "expected 5 numbers 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        return None, f"{expected}, got {len(fields)} values"
    try:
        values = [float(field) for field in fields]
    except ValueError:
        return None, f"{expected}, got {' '.join(fields)!r}"
    if not all(math.isfinite(v) for v in values):
        return None, f"coordinates must be finite numbers, got {' '.join(fields)!r}"
    category = values[0]
    if not (category.is_integer() and 0 <= category < nc):
        return None, f"class {fields[0]} is not an integer in [0, {nc}) (the classes of 'names')"
    coordinates = values[1:]
    outside = [v for v in coordinates if not -TOLERANCE <= v <= 1 + TOLERANCE]
    if outside:
        return None, (f"coordinates must be normalised to [0, 1] (divided by the image width and height), "
                      f"got {outside[0]:g}")
    if len(coordinates) == 4:
        cx, cy, w, h = coordinates
        return (int(category), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)), None
    xs, ys = coordinates[0::2], coordinates[1::2]
    return (int(category), (min(xs), min(ys), max(xs), max(ys))), None
