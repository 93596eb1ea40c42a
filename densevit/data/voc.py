"""Pascal VOC detection data read as a COCO instances object.

The layout of ``VOCdevkit/VOC2007`` (and 2012)::

    ImageSets/Main/<split>.txt    one image name per line (train, val, trainval, test)
    Annotations/<name>.xml        <size> and one <object> per box: <name>, <difficult>, <bndbox>
    JPEGImages/<name>.jpg

Conversion as mmdetection's (``tools/dataset_converters/pascal_voc.py``): VOC's 1-based
inclusive corners become ``bbox = [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]``, and a
``difficult`` object is kept as a crowd region (``iscrowd: 1``): left out of training targets,
and in evaluation a detection on it is neither a hit nor a miss. Classes are the 20 of Pascal
VOC (or the list given) with category ids 1..K in that order; images get ids 1..N in the
order of the split's list. The image size comes from ``<size>``, or from the picture's header
when ``<size>`` is missing or zero.

An object or file that cannot be read (XML that does not parse, a missing ``<name>`` or
``<bndbox>``, a coordinate that is not a number, a class not in the list, ``xmax < xmin``) is an
error naming the XML file and the element, or is dropped with one warning
(``data.bad_annotations: drop``; an XML file that does not parse takes its image with it).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

from densevit.data.coco_json import ORIGIN, Instances, report_bad_records
from densevit.data.images import picture_size
from densevit.errors import UserInputError

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
CORNERS = ("xmin", "ymin", "xmax", "ymax")


class _BadRecord(Exception):
    """What is wrong with one <object> or one XML file (the reader collects them)."""


def read_voc(root: str | Path, split: str, class_names: Sequence[str] | None = None,
             bad_annotations: str = "raise") -> Instances:
    """The images of ``ImageSets/Main/<split>.txt`` under ``root`` as COCO instances; see the
    module docstring."""
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    names = list(class_names or VOC_CLASSES)
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        found = sorted(p.stem for p in listing.parent.glob("*.txt") if "_" not in p.stem)
        raise UserInputError(f"{listing}: file not found (the split lists there: "
                             f"{', '.join(found) or 'none'})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"{listing}: cannot read the split list ({err})") from None
    if not ids:
        raise UserInputError(f"{listing}: lists no image")

    category_of = {name: i + 1 for i, name in enumerate(names)}
    problems: list[str] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, name in enumerate(ids, 1):
        xml = root / "Annotations" / f"{name}.xml"
        picture = root / "JPEGImages" / f"{name}.jpg"
        try:
            tree = _parse(xml)
            width, height = _size(tree, xml, picture)
        except (_BadRecord, UserInputError) as err:
            problems.append(str(err))
            continue
        images.append({"id": image_id, "file_name": picture.name, "width": width, "height": height})
        for k, element in enumerate(tree.findall("object"), 1):
            where = f"{xml}: <object> {k}"
            try:
                category, difficult, bbox = _object(element, category_of, where)
            except _BadRecord as err:
                problems.append(str(err))
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": difficult,
                                ORIGIN: f"{xml} <object> {k}"})
    report_bad_records(problems, bad_annotations, str(listing), named=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(names)]
    return Instances({"images": images, "annotations": annotations, "categories": categories},
                     root / "JPEGImages", str(listing))


def _parse(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except FileNotFoundError:
        raise _BadRecord(f"{xml}: file not found") from None
    except ET.ParseError as err:
        raise _BadRecord(f"{xml}: XML that does not parse ({err})") from None
    except OSError as err:
        raise _BadRecord(f"{xml}: cannot read the file ({err.strerror or err})") from None


def _size(tree: ET.Element, xml: Path, picture: Path) -> tuple[int, int]:
    """(width, height) from <size>, else from the picture's header."""
    try:
        width, height = (int(tree.findtext(f"size/{key}", "")) for key in ("width", "height"))
    except ValueError:
        width = height = 0
    return (width, height) if width > 0 and height > 0 else picture_size(picture)


def _object(element: ET.Element, category_of: dict[str, int], where: str) -> tuple[int, int, list[float]]:
    """(category id, difficult 0/1, bbox pixel xywh) of one <object>."""
    name = (element.findtext("name") or "").strip()
    if not name:
        raise _BadRecord(f"{where}: missing <name>")
    if name not in category_of:
        shown = ", ".join(list(category_of)[:5]) + (", ..." if len(category_of) > 5 else "")
        raise _BadRecord(f"{where}: <name> {name!r} is not one of the {len(category_of)} classes "
                         f"({shown}; data.class_names sets them)")
    where = f"{where} ({name})"
    difficult = (element.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise _BadRecord(f"{where}: <difficult> must be 0 or 1, got {difficult!r}")
    box = element.find("bndbox")
    if box is None:
        raise _BadRecord(f"{where}: missing <bndbox>")
    corners = []
    for key in CORNERS:
        text = box.findtext(key)
        if text is None:
            raise _BadRecord(f"{where}: missing <bndbox><{key}>")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise _BadRecord(f"{where}: <{key}> must be a number (1-based pixels), got {text.strip()!r}")
        corners.append(value)
    xmin, ymin, xmax, ymax = corners
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if corners[CORNERS.index(high)] < corners[CORNERS.index(low)]:
            raise _BadRecord(f"{where}: <{high}> {corners[CORNERS.index(high)]:g} is less than "
                             f"<{low}> {corners[CORNERS.index(low)]:g}")
    return category_of[name], int(difficult), [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]
