"""eval: our evaluators against the reference computations (COCO AP, mIoU, HD95), same numbers.

Three measurements, each on generated data, each timed against its baseline in the same run:

- ``coco``: bbox AP of 5,000 images (about 36k ground-truth boxes, 100 detections per image):
  ``COCOEvaluator`` fed per-image tensors vs plain pycocotools (``loadRes`` + ``COCOeval``).
- ``miou``: 500 label maps of 1024x2048 with 19 classes: ``SemanticEvaluator`` vs the
  per-image intersect-and-union histograms of mmsegmentation's ``IoUMetric``, summed.
- ``hd95``: Dice/HD95 of 8 organs in a 512x512x150 volume: ``MedicalEvaluator`` (TransUNet
  convention) vs medpy's ``dc``/``hd95`` on the full volume per organ, as TransUNet calls them.

Each asserts that both sides give the same numbers. ``--quick`` shrinks every size.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from densevit.bench import timed
from densevit.evaluation.coco import STAT_NAMES, COCOEvaluator
from densevit.evaluation.coco_gt import faster_coco_eval_available
from densevit.evaluation.medical import MedicalEvaluator
from densevit.evaluation.semantic import SemanticEvaluator

PARTS = ("coco", "miou", "hd95")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    sizes = {
        "coco_images": 300 if args.quick else 5000,
        "miou_maps": 20 if args.quick else 500,
        "miou_shape": (256, 512) if args.quick else (1024, 2048),
        "volume_shape": (128, 128, 40) if args.quick else (512, 512, 150),
    }
    measurements = {"coco": bench_coco, "miou": bench_miou, "hd95": bench_hd95}
    out: dict[str, Any] = {"settings": {"threads": args.threads, "quick": args.quick, "seed": args.seed,
                                        **{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}}}
    for part in args.parts:
        out[part] = measurements[part](sizes, np.random.default_rng(args.seed))
        print(f"{part}: ours {out[part]['ours_s']:.2f} s, baseline {out[part]['baseline_s']:.2f} s, "
              f"x{out[part]['ratio']:.1f}", flush=True)
    return out


def _figures(ours_s: float, baseline_s: float, **details: Any) -> dict[str, Any]:
    return {"ours_s": ours_s, "baseline_s": baseline_s, "ratio": baseline_s / ours_s, **details}


# ----------------------------------------------------------------------------- COCO
def coco_set(images: int, rng: np.random.Generator) -> tuple[dict, list[dict], list[int]]:
    """Ground truth (7.2 boxes per image on average, 80 categories with COCO's gapped ids) and
    100 detections per image as per-image float64 tensors (pixel xyxy, contiguous labels)."""
    category_ids = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    gt: dict[str, list] = {"images": [], "annotations": [],
                           "categories": [{"id": c, "name": str(c)} for c in category_ids]}
    predictions = []
    for image_id in range(1, images + 1):
        width, height = 640, 480
        gt["images"].append({"id": image_id, "width": width, "height": height})
        count = int(rng.poisson(7.2))
        xy = rng.uniform(0, [width - 40, height - 40], (count, 2))
        wh = rng.uniform(4, 300, (count, 2)) * rng.uniform(0.1, 1.0, (count, 1))
        labels = rng.integers(0, 80, count)
        for (x, y), (w, h), label in zip(xy.tolist(), wh.tolist(), labels.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": category_ids[label], "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": int(rng.random() < 0.01)})
        # Detections: jittered ground truth (some with the wrong class) and random boxes.
        source = rng.integers(0, max(count, 1), 100)
        if count:
            boxes = np.concatenate([xy[source], xy[source] + wh[source]], 1) + rng.normal(0, 6, (100, 4))
            det_labels = np.where(rng.random(100) < 0.7, labels[source], rng.integers(0, 80, 100))
        else:
            boxes = np.zeros((100, 4))
            det_labels = rng.integers(0, 80, 100)
        random = rng.random(100) < 0.3
        corner = rng.uniform(0, [width - 20, height - 20], (int(random.sum()), 2))
        boxes[random] = np.concatenate([corner, corner + rng.uniform(5, 200, corner.shape)], 1)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        predictions.append({"image_id": image_id, "boxes": torch.from_numpy(boxes),
                            "scores": torch.from_numpy(rng.random(100)), "labels": torch.from_numpy(det_labels)})
    return gt, predictions, category_ids


def as_results(predictions: list[dict], category_ids: list[int]) -> list[dict]:
    """The same detections in the COCO results format (xywh computed as the evaluator does)."""
    results = []
    for p in predictions:
        boxes = p["boxes"].numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for box, score, label in zip(xywh, p["scores"].tolist(), p["labels"].tolist()):
            results.append({"image_id": p["image_id"], "category_id": category_ids[label], "bbox": box,
                            "score": score})
    return results


def bench_coco(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, predictions, category_ids = coco_set(sizes["coco_images"], rng)
    results = as_results(predictions, category_ids)
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)  # pycocotools edits its inputs
    backend = "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"  # imports it

    def ours() -> np.ndarray:
        evaluator = COCOEvaluator(gt, backend=backend, label_to_category_id=category_ids)
        evaluator.process(predictions)
        stats = evaluator.compute()["bbox"]
        return np.array([stats[k] for k in STAT_NAMES])

    def baseline() -> np.ndarray:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = gt_copy
            coco_gt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results_copy), "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return np.asarray(coco_eval.stats)

    ours_s, ours_stats = timed(ours)
    baseline_s, baseline_stats = timed(baseline)
    difference = float(np.max(np.abs(ours_stats - baseline_stats)))
    assert difference <= 1e-12, f"COCO stats differ from pycocotools by {difference}"
    return _figures(ours_s, baseline_s, backend=backend, images=len(gt["images"]),
                    gt_boxes=len(gt["annotations"]), detections=len(results),
                    AP=float(ours_stats[0]), max_stat_difference=difference)


# ----------------------------------------------------------------------------- mIoU
def label_maps(count: int, shape: tuple[int, int], classes: int, rng: np.random.Generator):
    """Street-scene-like maps: blocky regions (upsampled coarse labels), 5% void; predictions
    disagree along region borders and in a few blotches."""
    coarse = rng.integers(0, classes, (count, shape[0] // 32, shape[1] // 32))
    gt = coarse.repeat(32, 1).repeat(32, 2).astype(np.int64)
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = np.roll(coarse.repeat(32, 1).repeat(32, 2), 5, axis=2).astype(np.int64)
    blotch = rng.random(pred.shape) < 0.1
    pred[blotch] = rng.integers(0, classes, int(blotch.sum()))
    return torch.from_numpy(pred), torch.from_numpy(gt)


def mmseg_intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int):
    """mmsegmentation's ``IoUMetric.intersect_and_union`` for one image."""
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]
    area_intersect = torch.histc(intersect.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_pred = torch.histc(pred.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_label = torch.histc(label.float(), bins=num_classes, min=0, max=num_classes - 1)
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def bench_miou(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    classes, count = 19, sizes["miou_maps"]
    # A pool of distinct maps, cycled: 500 different 1024x2048 pairs would need gigabytes.
    pool_pred, pool_gt = label_maps(min(8, count), sizes["miou_shape"], classes, rng)
    pairs = [(pool_pred[k % len(pool_pred)], pool_gt[k % len(pool_gt)]) for k in range(count)]

    def ours() -> dict[str, float]:
        evaluator = SemanticEvaluator(classes)
        for pred, gt in pairs:
            evaluator.process(pred, gt)
        result = evaluator.compute()
        return {k: result[k] for k in ("aAcc", "mIoU", "mAcc", "mDice")}

    def baseline() -> dict[str, float]:
        per_image = [mmseg_intersect_and_union(pred, gt, classes, 255) for pred, gt in pairs]
        inter, union, area_pred, area_label = (sum(r[i].double() for r in per_image) for i in range(4))
        return {"aAcc": float(inter.sum() / area_label.sum()), "mIoU": float(torch.nanmean(inter / union)),
                "mAcc": float(torch.nanmean(inter / area_label)),
                "mDice": float(torch.nanmean(2 * inter / (area_pred + area_label)))}

    ours_s, ours_values = timed(ours)
    baseline_s, baseline_values = timed(baseline)
    difference = max(abs(ours_values[k] - baseline_values[k]) for k in ours_values)
    assert difference <= 1e-12, f"mIoU figures differ from the per-image baseline by {difference}"
    return _figures(ours_s, baseline_s, maps=count, shape=list(sizes["miou_shape"]), classes=classes,
                    **ours_values, max_difference=difference)


# ----------------------------------------------------------------------------- HD95
def organ_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8 ellipsoid 'organs' of Synapse-like sizes and a prediction that is off by a voxel or two."""
    scale = np.array(shape) / np.array([512, 512, 150])
    radii = np.array([[90, 70, 40], [35, 30, 20], [25, 20, 25], [25, 20, 25], [12, 10, 10],
                      [40, 15, 10], [8, 8, 60], [50, 40, 20]]) * scale
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    gt = np.zeros(shape, dtype=np.uint8)
    for organ, radius in enumerate(radii, start=1):
        centre = rng.uniform(radius + 2, np.array(shape) - radius - 2)
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1
        gt[inside] = organ
    pred = np.roll(gt, (1, -1, 0), axis=(0, 1, 2))
    for organ in (2, 5):
        pred[ndimage.binary_dilation(pred == organ, iterations=2) & (pred == 0)] = organ
    blobs = rng.integers(0, np.array(shape) - 4, (6, 3))
    for organ, (x, y, z) in zip((1, 3, 4, 6, 7, 8), blobs):
        pred[x:x + 3, y:y + 3, z:z + 3] = organ
    return pred, gt


def medpy_style(pred: np.ndarray, gt: np.ndarray, classes: int) -> list[tuple[float, float]]:
    """TransUNet's ``calculate_metric_percase(prediction == i, label == i)`` with medpy's ``dc`` and
    ``hd95``, on the full volume."""
    def surface_distances(result, reference):
        footprint = ndimage.generate_binary_structure(result.ndim, 1)
        result_border = result ^ ndimage.binary_erosion(result, structure=footprint, iterations=1)
        reference_border = reference ^ ndimage.binary_erosion(reference, structure=footprint, iterations=1)
        return ndimage.distance_transform_edt(~reference_border, sampling=None)[result_border]

    scores = []
    for c in range(1, classes):
        p, g = pred == c, gt == c
        if p.sum() > 0 and g.sum() > 0:
            dice = 2.0 * np.count_nonzero(p & g) / float(np.count_nonzero(p) + np.count_nonzero(g))
            hd95 = np.percentile(np.hstack((surface_distances(p, g), surface_distances(g, p))), 95)
            scores.append((dice, float(hd95)))
        else:
            scores.append((1.0, 0.0) if p.sum() > 0 else (0.0, 0.0))
    return scores


def bench_hd95(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    pred, gt = organ_volume(tuple(sizes["volume_shape"]), rng)

    def ours() -> list[tuple[float, float]]:
        evaluator = MedicalEvaluator(9, convention="transunet")
        return [(row["dice"], row["hd95"]) for row in evaluator.process(pred, gt)]

    ours_s, ours_scores = timed(ours)
    baseline_s, baseline_scores = timed(lambda: medpy_style(pred, gt, 9))
    assert ours_scores == baseline_scores, f"HD95/Dice differ: {ours_scores} vs {baseline_scores}"
    return _figures(ours_s, baseline_s, shape=list(gt.shape), organs=8,
                    dice=[d for d, _ in ours_scores], hd95=[h for _, h in ours_scores])
