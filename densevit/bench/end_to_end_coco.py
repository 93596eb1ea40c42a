"""``densevit score coco`` as a process against the reference tools as plain scripts, same files.

A val2017-sized set is generated once: 5,000 images of COCO's sizes, about 36k ground-truth
objects over COCO's 80 gapped category ids (polygons; 1% crowd regions as uncompressed RLE),
500,000 box detections (100 per image: jittered ground truth, some with the wrong class, and
random boxes) and 100,000 mask detections (20 per image, compressed RLE, no box, so that every
tool takes the mask area for the area ranges). ``quick`` shrinks it to 300 images.

Each case runs three processes on the same two files, each timed wall-clock with its peak
resident memory (``ru_maxrss``): ``densevit score coco GT DT --iou-type T --out F``, a plain
pycocotools script (``COCO(gt)``, ``loadRes(dt)``, ``COCOeval`` evaluate/accumulate/summarize)
and the same script with faster-coco-eval's ``COCO`` and ``COCOeval_faster``. The 12 stats of
the three must agree (to 1e-12).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from densevit.bench import run_process
from densevit.evaluation.coco import STAT_NAMES

CATEGORY_IDS = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = [(640, 480), (640, 427), (480, 640), (427, 640), (640, 424), (500, 375), (640, 512)]

REFERENCE = """
import json, sys
if sys.argv[1] == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
else:
    from faster_coco_eval import COCO, COCOeval_faster as COCOeval
gt = COCO(sys.argv[2])
evaluator = COCOeval(gt, gt.loadRes(sys.argv[3]), sys.argv[4])
evaluator.evaluate()
evaluator.accumulate()
evaluator.summarize()
with open(sys.argv[5], "w") as out:
    json.dump([float(s) for s in evaluator.stats[:12]], out)
"""


# ----------------------------------------------------------------------------- the files
def _polygon(x: float, y: float, w: float, h: float, rng: np.random.Generator) -> list[float]:
    """An irregular ellipse-like polygon of 8..16 vertices inside the box, as flat [x0, y0, ...]."""
    k = int(rng.integers(8, 17))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.6, 1.0, k)
    px = x + w / 2 + np.cos(angles) * radius * w / 2
    py = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.round(np.stack([px, py], 1).reshape(-1), 2).tolist()


def _uncompressed(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a binary mask, starting with a run of zeros (COCO crowd RLE)."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat[0] else runs


def generate(workdir: Path, images: int, masks_per_image: int, seed: int = 0) -> dict[str, Path]:
    """Write ``gt.json``, ``bbox.json`` (100 detections per image) and ``segm.json``
    (``masks_per_image`` RLE detections per image) under ``workdir``; return their paths."""
    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.choice(600_000, images, replace=False)) + 1
    gt: dict[str, list] = {"images": [], "annotations": [],
                           "categories": [{"id": c, "name": f"class{c}", "supercategory": "thing"}
                                          for c in CATEGORY_IDS]}
    boxes_out, masks_out = [], []
    popularity = rng.dirichlet(np.full(80, 0.5))
    for image_id in image_ids.tolist():
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        gt["images"].append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        count = int(rng.poisson(7.3))
        labels = rng.choice(80, count, p=popularity)
        wh = np.exp(rng.normal(4.1, 1.1, (count, 2))).clip(2, [width * 0.95, height * 0.95])
        xy = rng.uniform(0, 1, (count, 2)) * ([width, height] - wh)
        polygons, gt_boxes = [], np.zeros((count, 4))
        for j, ((x, y), (w, h), label) in enumerate(zip(xy.tolist(), wh.tolist(), labels.tolist())):
            polygon = _polygon(x, y, w, h, rng)
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            crowd = rng.random() < 0.01
            segmentation: Any = [polygon]
            if crowd:
                segmentation = {"size": [height, width], "counts": _uncompressed(mask_utils.decode(rle))}
            polygons.append(polygon)
            gt_boxes[j] = np.round(mask_utils.toBbox(rle), 2)
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                "segmentation": segmentation, "area": float(mask_utils.area(rle)),
                "bbox": gt_boxes[j].tolist(), "iscrowd": int(crowd)})
        # Box detections: jittered ground truth (30% with another class; the first copy of an
        # object scores high, the others lower) and random boxes (low scores).
        source = rng.integers(0, max(count, 1), 100)
        random = rng.random(100) < (0.4 if count else 1.0)
        boxes = gt_boxes[source] if count else np.zeros((100, 4))
        boxes = boxes + rng.normal(0, 0.04, (100, 4)) * np.tile(boxes[:, 2:], 2)
        boxes[random] = np.concatenate([rng.uniform(0, 1, (int(random.sum()), 2)) * [width, height],
                                        np.exp(rng.normal(3.5, 1.0, (int(random.sum()), 2)))], 1)
        boxes[:, 2:] = np.abs(boxes[:, 2:])
        det_labels = np.where(rng.random(100) < 0.7, labels[source] if count else 0, rng.integers(0, 80, 100))
        first = np.zeros(100, bool)
        first[np.unique(np.where(random, -1, source), return_index=True)[1]] = True
        scores = np.where(random, rng.uniform(0, 0.5, 100), np.where(first & ~random, rng.uniform(0.4, 1, 100),
                                                                     rng.uniform(0, 0.6, 100)))
        scores = scores.astype(np.float32).tolist()
        for k in range(100):
            boxes_out.append({"image_id": image_id, "category_id": CATEGORY_IDS[int(det_labels[k])],
                              "bbox": np.round(boxes[k], 2).tolist(), "score": scores[k]})
        # Mask detections: shifted ground-truth polygons (compressed RLE), the best-scored of the boxes.
        for k in np.argsort(scores, kind="stable")[::-1][:masks_per_image].tolist():
            if count and not random[k]:
                shift = rng.normal(0, 0.04, 2) * gt_boxes[source[k], 2:]
                polygon = (np.asarray(polygons[source[k]]).reshape(-1, 2) + shift).reshape(-1).tolist()
            else:
                polygon = _polygon(*boxes[k], rng)
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            masks_out.append({"image_id": image_id, "category_id": CATEGORY_IDS[int(det_labels[k])],
                              "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                              "score": scores[k]})
    paths = {"gt": workdir / "gt.json", "bbox": workdir / "bbox.json", "segm": workdir / "segm.json"}
    for key, data in (("gt", gt), ("bbox", boxes_out), ("segm", masks_out)):
        paths[key].write_text(json.dumps(data))
    return paths


def _stats(path: Path, iou_type: str) -> list[float]:
    data = json.loads(path.read_text())
    return [float(v) for v in data] if isinstance(data, list) else [float(data[iou_type][k]) for k in STAT_NAMES]


def run_coco_end_to_end(workdir: Path, quick: bool) -> dict[str, Any]:
    """Generate the files under ``workdir`` and time the three processes per iou type.

    Returns ``{"settings": ..., "bbox": case, "segm": case}``; a case holds per tool
    (``densevit``, ``pycocotools``, ``faster_coco_eval`` when installed) ``seconds`` and
    ``peak_rss_mb`` and the 12 stats; densevit's ``ratio_vs_<tool>`` (the tool's seconds over
    densevit's) and ``stat_difference_vs_<tool>`` (largest, asserted <= 1e-12).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    images, masks_per_image = (300, 20) if quick else (5000, 20)
    paths = generate(workdir, images, masks_per_image)
    script = workdir / "reference.py"
    script.write_text(REFERENCE)
    tools = ["pycocotools"] + (["faster_coco_eval"] if importlib.util.find_spec("faster_coco_eval") else [])
    out: dict[str, Any] = {"settings": {
        "quick": quick, "images": images, "gt_objects": len(json.loads(paths["gt"].read_text())["annotations"]),
        "box_detections": 100 * images, "mask_detections": masks_per_image * images,
        "cpu_count": os.cpu_count(), "msgspec": importlib.util.find_spec("msgspec") is not None}}
    for iou_type in ("bbox", "segm"):
        case: dict[str, Any] = {}
        runs = {"densevit": [sys.executable, "-m", "densevit", "score", "coco", str(paths["gt"]), str(paths[iou_type]),
                             "--iou-type", iou_type, "--out", str(workdir / f"densevit_{iou_type}.json")]}
        for tool in tools:
            runs[tool] = [sys.executable, str(script), tool, str(paths["gt"]), str(paths[iou_type]), iou_type,
                          str(workdir / f"{tool}_{iou_type}.json")]
        for name, command in runs.items():
            case[name] = run_process(command, workdir / f"{name}_{iou_type}.log")
            case[name]["stats"] = _stats(workdir / f"{name}_{iou_type}.json", iou_type)
        for tool in tools:
            difference = float(np.max(np.abs(np.subtract(case[tool]["stats"], case["densevit"]["stats"]))))
            assert difference <= 1e-12, f"{iou_type}: densevit's stats differ from {tool}'s by {difference}"
            case[f"ratio_vs_{tool}"] = case[tool]["seconds"] / case["densevit"]["seconds"]
            case[f"stat_difference_vs_{tool}"] = difference
        out[iou_type] = case
        print(f"{iou_type}: " + ", ".join(f"{name} {case[name]['seconds']:.2f} s ({case[name]['peak_rss_mb']:.0f} MB)"
                                        for name in runs), flush=True)
    return out
